"""`--taxa` names -> what to ask each source: Xeno-canto tags and iNaturalist taxon ids."""

from __future__ import annotations

from dataclasses import dataclass, field

from biovita_data.core.names import closest_epithet
from biovita_data.crawl.http import FetchError, HttpClient

# Classes: real iNaturalist taxon ids and the Xeno-canto groups that hold them.
CLASSES: dict[str, tuple[int, tuple[str, ...]]] = {
    "Aves": (3, ("birds",)),
    "Amphibia": (20978, ("frogs",)),
    "Mammalia": (40151, ("bats", "land mammals")),
    "Insecta": (47158, ("grasshoppers",)),
    "Reptilia": (26036, ()),
    "Actinopterygii": (47178, ()),
}
CLASS_BY_ID = {tid: name for name, (tid, _) in CLASSES.items()}


@dataclass
class Target:
    """One resolved `--taxa` entry."""

    name: str
    rank: str
    inat_id: int
    class_name: str | None
    xc_queries: list[str] = field(default_factory=list)
    # Client-side filter for XC results of lower ranks: genus -> accepted epithets (None: all).
    xc_genera: dict[str, set[str] | None] = field(default_factory=dict)
    # Other epithets of the same genera, so a spelling variant goes to its closest species.
    xc_siblings: set[str] = field(default_factory=set)

    def xc_keeps(self, gen: str, sp: str) -> bool:
        """Whether an XC recording named (gen, sp) belongs to this target."""
        if not self.xc_genera:
            return True
        epithets = self.xc_genera.get(gen.strip().lower(), False)
        if epithets is False:
            return False
        if epithets is None:
            return True
        return closest_epithet(sp.strip().lower(), epithets | self.xc_siblings)[0] in epithets


def ancestors_of(taxon: dict) -> list[int]:
    """A taxon's ancestor ids, root first, without the taxon itself.

    iNaturalist's `ancestor_ids` usually ends with the taxon's own id, but not always; dropping
    the last id blindly loses the parent (a subspecies' species, a species' genus).
    """
    own = taxon.get("id")
    out = []
    for i in taxon.get("ancestor_ids") or []:
        try:
            out.append(int(i))
        except (TypeError, ValueError):
            continue
    return [i for i in out if own is None or str(i) != str(own)]


def xc_tag(tag: str, value: str) -> str:
    """A Xeno-canto search tag; values with spaces are quoted (`grp:"land mammals"`)."""
    return f'{tag}:"{value}"' if " " in value else f"{tag}:{value}"


class TaxonNotFound(FetchError):
    """A `--taxa` name iNaturalist does not know; names the closest known ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        from rapidfuzz import process

        matches = process.extract(name, list(dict.fromkeys(filter(None, known))), limit=3)
        self.suggestions = [m for m, score, _ in matches if score >= 70]
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"taxon {name!r} not found on iNaturalist{hint}")


def add_synonym(target: Target, binomial: str) -> None:
    """Also ask Xeno-canto for `binomial` (an older name of a species of `target`): its genus
    is queried once, and from that genus only the synonyms' epithets are kept."""
    genus, epithet = (w.lower() for w in binomial.split(" ", 1))
    query = f"gen:{binomial.split(' ', 1)[0]}"
    if target.xc_genera.get(genus, set()) is None:
        return  # the whole genus is already wanted
    target.xc_genera.setdefault(genus, set()).add(epithet)  # type: ignore[union-attr]
    if query.lower() not in {q.lower() for q in target.xc_queries}:
        target.xc_queries.append(query)


class TaxonResolver:
    """Resolves names through iNaturalist `/taxa` (the built-in table covers classes)."""

    def __init__(self, http: HttpClient, inat_url: str) -> None:
        self.http = http
        self.inat_url = inat_url.rstrip("/")

    def resolve(self, name: str) -> Target:
        clean = " ".join(name.split())
        for cls, (tid, groups) in CLASSES.items():
            if cls.lower() == clean.lower():
                return Target(cls, "class", tid, cls, [xc_tag("grp", g) for g in groups])
        taxon = self._lookup(clean)
        ancestors = ancestors_of(taxon)
        class_name = next((CLASS_BY_ID[i] for i in ancestors if i in CLASS_BY_ID), None)
        groups = CLASSES[class_name][1] if class_name else ()
        target = Target(taxon["name"], taxon["rank"], int(taxon["id"]), class_name)
        if not groups:
            return target
        if taxon["rank"] in ("species", "subspecies"):
            genus, epithet = taxon["name"].split(" ")[:2]
            siblings = self._children(int(self._lookup(genus)["id"]), "species")
            target.xc_genera = {genus.lower(): {epithet.lower()}}
            target.xc_siblings = {s.split(" ")[1].lower() for s in siblings}
            target.xc_queries = [f"gen:{genus}"]
            within = (
                int(taxon["id"])
                if taxon["rank"] == "species"
                else int(self._lookup(f"{genus} {epithet}")["id"])
            )
        elif taxon["rank"] == "genus":
            target.xc_genera = {taxon["name"].lower(): None}
            target.xc_queries = [f"gen:{taxon['name']}"]
            within = int(taxon["id"])
        else:
            genera = sorted(self._children(int(taxon["id"]), "genus"))
            target.xc_genera = {g.lower(): None for g in genera}
            target.xc_queries = [f"gen:{g}" for g in genera]
            within = int(taxon["id"])
        # Xeno-canto files recordings under its own checklist's names: ask for the older names
        # too, keeping from those genera only the synonyms' epithets
        for old in self._synonyms(within):
            add_synonym(target, old)
        return target

    def _synonyms(self, taxon_id: int) -> list[str]:
        """Synonym binomials of the species at or under `taxon_id` (iNaturalist `all_names`)."""
        found: set[str] = set()
        for t in self._children_of(taxon_id, "species", all_names=True):
            for n in t.get("names") or []:
                if not isinstance(n, dict) or n.get("is_valid", True) is not False:
                    continue
                lexicon = str(n.get("lexicon") or "").lower()
                if n.get("locale") != "sci" and "scientific" not in lexicon:
                    continue
                words = str(n.get("name") or "").split()
                if len(words) == 2 and words[0][:1].isupper() and words[1].islower():
                    found.add(" ".join(words))
        return sorted(found)

    def _lookup(self, name: str) -> dict:
        data = self.http.get_json(
            f"{self.inat_url}/taxa", {"q": name, "per_page": 30}, policy="inaturalist"
        )
        for t in data.get("results", []):
            if t.get("name", "").lower() == name.lower() and t.get("is_active", True):
                return t
        known = [*CLASSES, *(t.get("name", "") for t in data.get("results", []))]
        raise TaxonNotFound(name, known)

    def _children(self, taxon_id: int, rank: str) -> list[str]:
        return [t["name"] for t in self._children_of(taxon_id, rank)]

    def _children_of(self, taxon_id: int, rank: str, all_names: bool = False) -> list[dict]:
        """Every taxon of `rank` at or under `taxon_id`, all pages."""
        found: list[dict] = []
        page = 1
        while True:
            params: dict = {"taxon_id": taxon_id, "rank": rank, "per_page": 200, "page": page}
            if all_names:
                params["all_names"] = "true"
            data = self.http.get_json(f"{self.inat_url}/taxa", params, policy="inaturalist")
            found += [t for t in data.get("results", []) if isinstance(t, dict) and "name" in t]
            if page * 200 >= int(data.get("total_results", 0)):
                return found
            page += 1


# GBIF `/species/match` answers that found no usable taxon.
NO_MATCH = (None, "NONE", "HIGHERRANK")


def gbif_species_match(data: object, name: str) -> tuple[int, str]:
    """A GBIF `/species/match` answer -> (the accepted backbone key, its rank), from a v1 body
    (`usageKey`, `acceptedUsageKey`, `matchType`, `rank`, `synonym`) or a v2 body (`usage` and,
    for a synonym, `acceptedUsage`, each with `key` and `rank`; `diagnostics.matchType`)."""
    if not isinstance(data, dict):
        raise FetchError(f"GBIF /species/match for {name!r}: not a JSON object")
    obj = {k: v for k, v in data.items() if isinstance(v, dict)}
    if "usage" in obj or "diagnostics" in obj:
        usage, accepted = obj.get("usage"), obj.get("acceptedUsage")
        kind = obj["diagnostics"].get("matchType") if "diagnostics" in obj else "EXACT"
        if kind in NO_MATCH or usage is None:
            raise FetchError(f"taxon {name!r} not found in the GBIF backbone (/species/match)")
        chosen = accepted if accepted is not None else usage
        key, rank = chosen.get("key"), chosen.get("rank") or usage.get("rank")
    else:
        if data.get("matchType") in NO_MATCH:
            raise FetchError(f"taxon {name!r} not found in the GBIF backbone (/species/match)")
        key = data.get("acceptedUsageKey") if data.get("synonym") else data.get("usageKey")
        rank = data.get("rank")
    try:
        return int(str(key).strip()), str(rank or "").upper()
    except ValueError:
        raise FetchError(f"GBIF /species/match for {name!r}: no usable key ({key!r})") from None
