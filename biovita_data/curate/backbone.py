"""The taxonomic backbone that names resolve against: iNaturalist taxa, or a GBIF-style/user CSV.

A backbone knows accepted species (id, name, lineage, common name) and synonyms (old names and
subspecies -> accepted id). `resolve` maps raw names to species: exact, synonym, subspecies, then a
conservative fuzzy step (`names.closest_epithet`) that never moves a name onto another accepted
species and never picks between two.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
from rapidfuzz import process

from biovita_data.core.names import ParsedName, closest_epithet, parse_name
from biovita_data.core.schemas import LINEAGE
from biovita_data.core.tables import read_table, write_table
from biovita_data.crawl.http import HttpClient
from biovita_data.crawl.taxa import ancestors_of

INAT_TAXON = pa.schema(
    [
        pa.field("taxon_id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("rank", pa.string()),
        pa.field("ancestor_ids", pa.string()),  # slash-joined, root first, excluding self
        pa.field("common_name", pa.string()),
        pa.field("is_active", pa.bool_()),
    ]
)
INAT_SEARCH = pa.schema(
    [
        pa.field("query", pa.string(), nullable=False),
        pa.field("taxon_id", pa.int64()),  # null: iNaturalist knows no such name
        pa.field("matched_term", pa.string()),
    ]
)
IDS_PER_REQUEST = 30  # iNaturalist's /taxa/{ids} limit


@dataclass(frozen=True)
class Resolution:
    name: str
    normalized: str | None
    species_id: int | None
    match_kind: str | None  # exact | synonym | subspecies | fuzzy
    reason: str | None  # why it did not resolve
    closest: str | None = None


@dataclass
class Backbone:
    """Accepted species and synonyms; optionally a remote `lookup` that can add to both."""

    label: str
    species: dict[int, dict] = field(default_factory=dict)  # id -> name, common_name, lineage
    accepted: dict[str, int] = field(default_factory=dict)  # binomial -> id
    synonyms: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (id, kind)

    def add_species(self, taxon_id: int, name: str, common: str | None, lineage: dict) -> None:
        self.species[taxon_id] = {"scientific_name": name, "common_name": common, **lineage}
        self.accepted[name] = taxon_id

    def add_synonym(self, name: str, taxon_id: int, kind: str = "synonym") -> None:
        if name not in self.accepted:
            self.synonyms.setdefault(name, (taxon_id, kind))

    def lookup(self, names: list[ParsedName]) -> None:
        """Ask a remote backbone about names it has not seen yet (nothing for a file backbone)."""

    def _local(self, p: ParsedName) -> tuple[int, str] | None:
        if p.infra and p.normalized in self.synonyms:
            return self.synonyms[p.normalized]
        if p.binomial in self.accepted:
            return self.accepted[p.binomial], "subspecies" if p.infra else "exact"
        if p.binomial in self.synonyms:
            return self.synonyms[p.binomial]
        return None

    def resolve(self, raw_names: Iterable[str]) -> list[Resolution]:
        """One Resolution per distinct raw name, in sorted order."""
        names = sorted({n for n in raw_names if n is not None})
        parsed = {n: parse_name(n) for n in names}
        pending = [p for p in parsed.values() if not p.problem and self._local(p) is None]
        if pending:
            self.lookup(pending)
        by_genus: dict[str, dict[str, int]] = {}
        for binomial, tid in self.accepted.items():
            genus, epithet = binomial.split(" ", 1)
            by_genus.setdefault(genus, {})[epithet] = tid
        choices = sorted(self.accepted)
        out = []
        for n in names:
            p = parsed[n]
            if p.problem:
                out.append(Resolution(n, p.normalized, None, None, p.problem))
                continue
            hit = self._local(p)
            if hit:
                out.append(Resolution(n, p.normalized, hit[0], hit[1], None))
                continue
            siblings = by_genus.get(p.genus or "", {})
            epithet, how = closest_epithet(p.epithet or "", set(siblings))
            if epithet is not None:
                out.append(Resolution(n, p.normalized, siblings[epithet], "fuzzy", None))
                continue
            best = process.extractOne(p.binomial, choices) if choices else None
            out.append(Resolution(n, p.normalized, None, None, how, best[0] if best else None))
        return out

    def species_frame(self, ids: Iterable[int]) -> pl.DataFrame:
        """Lineage rows for these species ids (species_id, scientific_name, ..., genus, species)."""
        rows = [{"species_id": i, **self.species[i]} for i in sorted(set(ids))]
        schema = {
            "species_id": pl.Int64,
            "scientific_name": pl.String,
            "common_name": pl.String,
            **{r: pl.String for r in LINEAGE},
        }
        return pl.DataFrame(rows, schema=schema).with_columns(species=pl.col("scientific_name"))


def stable_id(name: str) -> int:
    """A positive 56-bit id from a name, for backbones that carry no ids."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest(), "big")


# ---- a CSV backbone (GBIF Darwin Core or plain) -------------------------------------------------

_ALIASES = {
    "name": ("canonicalName", "scientific_name", "scientificName", "name", "accepted_name"),
    "taxon_id": ("taxonID", "taxon_id", "id"),
    "rank": ("taxonRank", "rank"),
    "status": ("taxonomicStatus", "status"),
    "accepted_id": ("acceptedNameUsageID", "accepted_id"),
    "accepted_name": ("acceptedName", "accepted_name_usage"),
    "common_name": ("vernacularName", "common_name"),
    **{r: (r,) for r in LINEAGE},
}


def csv_backbone(path: Path) -> Backbone:
    """Read a backbone CSV/TSV: one row per name; synonyms point at their accepted row.

    Columns (GBIF or plain spelling): name (`canonicalName`/`scientific_name`), lineage
    (`kingdom` ... `genus`), optional `taxonID`, `taxonRank` (species rows and below are used),
    `taxonomicStatus` + `acceptedNameUsageID` or `accepted_name` for synonyms, `vernacularName`.
    """
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    df = pl.read_csv(path, separator=sep, infer_schema=False, quote_char='"', encoding="utf8-lossy")
    cols = {}
    for key, options in _ALIASES.items():
        found = next((c for c in options if c in df.columns), None)
        if found:
            cols[key] = found
    missing = [k for k in ("name", "family", "genus") if k not in cols]
    if missing:
        raise ValueError(
            f"{path}: a backbone needs columns for {missing} "
            f"(accepted spellings: {[_ALIASES[m] for m in missing]}); it has {df.columns}"
        )
    df = df.select([pl.col(c).alias(k) for k, c in cols.items()])
    for k in _ALIASES:
        if k not in df.columns:
            df = df.with_columns(pl.lit(None, pl.String).alias(k))
    df = df.with_columns(
        pl.col("rank").str.to_lowercase().fill_null("species"),
        pl.col("status").str.to_lowercase().fill_null("accepted"),
    ).filter(pl.col("rank").is_in(["species", "subspecies", "variety", "form"]))
    bb = Backbone(label=f"csv:{path.name}")
    accepted = df.filter(pl.col("status").str.contains("accepted|valid|doubtful|^$"))
    accepted = accepted.filter(pl.col("rank") == "species")
    by_source_id: dict[str, int] = {}
    for row in accepted.iter_rows(named=True):
        p = parse_name(row["name"])
        if p.problem or not p.binomial:
            continue
        tid = int(row["taxon_id"]) if (row["taxon_id"] or "").isdigit() else stable_id(p.binomial)
        lineage = {r: row[r] for r in LINEAGE}
        bb.add_species(tid, p.binomial, row["common_name"], lineage)
        if row["taxon_id"]:
            by_source_id[row["taxon_id"]] = tid
    for row in df.iter_rows(named=True):
        p = parse_name(row["name"])
        if p.problem or not p.binomial:
            continue
        if row["rank"] != "species" and p.binomial in bb.accepted:
            bb.add_synonym(p.normalized or p.binomial, bb.accepted[p.binomial], "subspecies")
            continue
        if row["status"] in ("accepted", "valid", "doubtful", ""):
            continue
        target = by_source_id.get(row["accepted_id"] or "")
        if target is None and row["accepted_name"]:
            target = bb.accepted.get(parse_name(row["accepted_name"]).binomial or "")
        if target is not None:
            bb.add_synonym(p.normalized or p.binomial, target)
    return bb


def add_user_synonyms(bb: Backbone, path: Path) -> int:
    """Add synonyms from a CSV with columns `name`, `accepted_name`; returns how many were used."""
    df = pl.read_csv(path, infer_schema=False)
    if not {"name", "accepted_name"} <= set(df.columns):
        raise ValueError(f"{path}: a synonym table needs columns name, accepted_name")
    used = 0
    for name, accepted in df.select("name", "accepted_name").iter_rows():
        target = bb.accepted.get(parse_name(accepted).binomial or "")
        p = parse_name(name)
        if target is not None and not p.problem and p.binomial:
            bb.add_synonym(p.normalized or p.binomial, target)
            used += 1
    return used


# ---- iNaturalist as the backbone -----------------------------------------------------------------


class InatBackbone(Backbone):
    """iNaturalist's taxonomy: species of iNaturalist records, lineage from `/taxa/{ids}`, and
    `/taxa?q=` for other sources' names. Answers are cached under OUT/raw/backbone/, so a re-run
    asks nothing and gives the same result."""

    def __init__(self, http: HttpClient, api_url: str, cache_dir: Path) -> None:
        super().__init__(label="inat")
        self.http = http
        self.api_url = api_url.rstrip("/")
        self.cache_dir = cache_dir
        self.taxa = pl.from_arrow(read_table(cache_dir / "inat_taxa.parquet", INAT_TAXON))
        self.searches = pl.from_arrow(read_table(cache_dir / "inat_search.parquet", INAT_SEARCH))
        self.requests = 0

    # cache ------------------------------------------------------------------------------------
    def _taxon_rows(self, results: list[dict]) -> pl.DataFrame:
        rows = [
            {
                "taxon_id": int(t["id"]),
                "name": t.get("name"),
                "rank": t.get("rank"),
                "ancestor_ids": "/".join(str(i) for i in ancestors_of(t)),
                "common_name": t.get("preferred_common_name"),
                "is_active": bool(t.get("is_active", True)),
            }
            for t in results
        ]
        return pl.from_arrow(pa.Table.from_pylist(rows, schema=INAT_TAXON))

    def _remember(self, rows: pl.DataFrame) -> None:
        merged = pl.concat([self.taxa, rows]).unique("taxon_id", keep="last").sort("taxon_id")
        self.taxa = merged
        write_table(merged.to_arrow().cast(INAT_TAXON), self.cache_dir / "inat_taxa.parquet")

    def fetch_taxa(self, ids: Iterable[int]) -> None:
        """Fetch (and cache) the taxa with these ids that the cache does not hold yet."""
        known = set(self.taxa["taxon_id"].to_list())
        wanted = sorted(set(ids) - known)
        for i in range(0, len(wanted), IDS_PER_REQUEST):
            chunk = wanted[i : i + IDS_PER_REQUEST]
            data = self.http.get_json(
                f"{self.api_url}/taxa/{','.join(map(str, chunk))}", policy="inaturalist"
            )
            self.requests += 1
            self._remember(self._taxon_rows(data.get("results", [])))

    # building -----------------------------------------------------------------------------------
    def add_from_records(self, taxa: pl.DataFrame) -> None:
        """Register the taxa of iNaturalist records: (raw_taxon_id, raw_scientific_name,
        raw_taxon_rank, raw_ancestry, common_name), one row per distinct taxon."""
        rows = taxa.select(
            taxon_id=pl.col("raw_taxon_id"),
            name=pl.col("raw_scientific_name"),
            rank=pl.col("raw_taxon_rank"),
            ancestor_ids=pl.col("raw_ancestry"),
            common_name=pl.col("common_name"),
            is_active=pl.lit(True),
        ).filter(pl.col("taxon_id").is_not_null())
        new = rows.join(self.taxa.select("taxon_id"), on="taxon_id", how="anti")
        if new.height:
            self._remember(new.unique("taxon_id", keep="first"))

    def species_for_taxon(self) -> dict[int, tuple[int, str]]:
        """Record taxon id -> (species id, match kind): species themselves, subspecies to parent."""
        out: dict[int, tuple[int, str]] = {}
        for tid, rank, anc in self.taxa.select("taxon_id", "rank", "ancestor_ids").iter_rows():
            if rank == "species":
                out[tid] = (tid, "exact")
            elif rank in ("subspecies", "variety", "form") and anc:
                out[tid] = (int(anc.rsplit("/", 1)[-1]), "subspecies")
        return out

    def complete(self, species_ids: Iterable[int]) -> None:
        """Fetch what the lineage of these species needs, then register them as accepted."""
        ids = set(species_ids)
        self.fetch_taxa(ids)
        ancestors = set()
        for anc in self.taxa.filter(pl.col("taxon_id").is_in(list(ids)))["ancestor_ids"]:
            ancestors |= {int(a) for a in (anc or "").split("/") if a}
        self.fetch_taxa(ancestors)
        info = {r["taxon_id"]: r for r in self.taxa.iter_rows(named=True)}
        for tid in sorted(ids):
            t = info.get(tid)
            if t is None or t["rank"] != "species" or not t["name"]:
                continue
            lineage = dict.fromkeys(LINEAGE)
            for a in (t["ancestor_ids"] or "").split("/"):
                anc = info.get(int(a)) if a else None
                if anc and anc["rank"] in lineage:
                    lineage[anc["rank"]] = anc["name"]
            self.add_species(tid, t["name"], t["common_name"], lineage)

    def lookup(self, names: list[ParsedName]) -> None:
        """`/taxa?q=` for each binomial not asked before; exact name or synonym matches only."""
        asked = set(self.searches["query"].to_list())
        queries = sorted({p.binomial for p in names if p.binomial} - asked)
        rows, found = [], []
        for q in queries:
            data = self.http.get_json(
                f"{self.api_url}/taxa",
                {"q": q, "rank": "species", "per_page": 30},
                policy="inaturalist",
            )
            self.requests += 1
            hit = next(
                (
                    t
                    for t in data.get("results", [])
                    if t.get("is_active", True)
                    and parse_name(t.get("matched_term") or t.get("name")).binomial == q
                ),
                None,
            )
            rows.append(
                {
                    "query": q,
                    "taxon_id": int(hit["id"]) if hit else None,
                    "matched_term": hit.get("matched_term") if hit else None,
                }
            )
            if hit:
                found.append(hit)
        if found:
            self._remember(self._taxon_rows(found))
        if rows:
            new = pl.from_arrow(pa.Table.from_pylist(rows, schema=INAT_SEARCH))
            self.searches = pl.concat([self.searches, new]).sort("query")
            write_table(self.searches.to_arrow(), self.cache_dir / "inat_search.parquet")
        self.apply_searches()

    def apply_searches(self) -> None:
        """Turn cached search answers into accepted species and synonyms."""
        hits = self.searches.filter(pl.col("taxon_id").is_not_null())
        self.complete(hits["taxon_id"].to_list())
        for q, tid in hits.select("query", "taxon_id").iter_rows():
            if tid in self.species and self.species[tid]["scientific_name"] != q:
                self.add_synonym(q, tid)
