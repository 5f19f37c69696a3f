"""The sample world's photos as TreeOfLife-200M publishes its metadata: catalog + provenance.

As in the real release, the images are GBIF's copies of iNaturalist research-grade photos: the
catalog's `source_url` points at the (sample) iNaturalist Open Data bucket, `source_id` is a GBIF
occurrence id, `species` is the epithet only, and the licence and owner are in provenance
(`license_name` such as `cc-by-nc`, `license_link` a URL or null, `copyright_owner` or
`not provided`). Three rows name species outside the world (an importer never draws them).
"""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.sample.world import SNAPSHOT, Photo, World

CATALOG_COLUMNS = (
    "uuid", "source_url", "kingdom", "phylum", "class", "order", "family", "genus", "species",
    "scientific_name", "common", "data_source", "publisher", "basisOfRecord", "img_type",
    "source_id", "shard_filename", "shard_file_path", "base_dataset_file_path",
)  # fmt: skip
PROVENANCE_COLUMNS = (
    "uuid", "source_id", "data_source", "source_url", "license_name", "copyright_owner",
    "license_link", "title",
)  # fmt: skip
PHYLUM = {"Aves": "Chordata", "Amphibia": "Chordata", "Mammalia": "Chordata",
          "Reptilia": "Chordata", "Insecta": "Arthropoda"}  # fmt: skip
# (class, order, family, genus, epithet, common) of real species outside the world
OUTSIDE = (
    ("Aves", "Passeriformes", "Turdidae", "Turdus", "merula", "Eurasian Blackbird"),
    ("Mammalia", "Carnivora", "Felidae", "Panthera", "leo", "Lion"),
    ("Reptilia", "Squamata", "Lacertidae", "Lacerta", "agilis", "Sand Lizard"),
)
_NS = uuidlib.UUID("6f1c1d0e-7d2a-4a55-9b0e-0c5b1a7e2f10")


def photo_uuid(photo_id: int) -> str:
    """The catalog uuid of a world photo (stable)."""
    return str(uuidlib.uuid5(_NS, f"photo:{photo_id}"))


def _licence(code: str | None) -> tuple[str, str | None]:
    """iNaturalist licence code -> (license_name, license_link) as provenance writes them."""
    if code is None:
        return "All rights reserved", None
    if code == "cc0":
        return "cc0", "https://creativecommons.org/publicdomain/zero/1.0/"
    return code, f"https://creativecommons.org/licenses/{code.removeprefix('cc-')}/4.0/"


def tol_photos(world: World) -> list[Photo]:
    """The photos the view lists: those of research-grade observations uploaded by SNAPSHOT."""
    obs = world.observation_by_id
    return [
        p
        for p in world.photos
        if obs[p.observation_id].quality_grade == "research"
        and obs[p.observation_id].created_at.date() <= SNAPSHOT
    ]


def tol_tables(world: World, root: str) -> tuple[pa.Table, pa.Table]:
    """(catalog, provenance) of the world's photos, media served under `root`."""
    root = root.rstrip("/")
    cat: list[dict] = []
    prov: list[dict] = []
    obs = world.observation_by_id
    for i, p in enumerate(tol_photos(world)):
        sp = world.species[p.species_index]
        uid, gbif_id = photo_uuid(p.id), str(4_000_000_000 + p.observation_id)
        url = f"{root}/inaturalist-open-data/photos/{p.id}/original.{p.fmt}"
        lineage = ("Animalia", PHYLUM.get(sp.class_name), sp.class_name, sp.order, sp.family,
                   sp.genus, sp.epithet)  # fmt: skip
        cat.append(_catalog_row(uid, url, lineage, sp.name, sp.common_name, gbif_id, i))
        name, link = _licence(p.license)
        owner = "not provided" if i % 9 == 4 else obs[p.observation_id].login
        prov.append(
            {"uuid": uid, "source_id": gbif_id, "data_source": "gbif", "source_url": url,
             "license_name": name, "copyright_owner": owner, "license_link": link,
             "title": f"{sp.name} (observation {p.observation_id})"}
        )  # fmt: skip
    for k, (cls, order, family, genus, epithet, common) in enumerate(OUTSIDE):
        uid, gbif_id = str(uuidlib.uuid5(_NS, f"outside:{k}")), str(3_900_000_000 + k)
        url = f"{root}/inaturalist-open-data/photos/{900_000_000 + k}/original.jpg"
        lineage = ("Animalia", PHYLUM[cls], cls, order, family, genus, epithet)
        cat.append(_catalog_row(uid, url, lineage, f"{genus} {epithet}", common, gbif_id, k))
        prov.append(
            {"uuid": uid, "source_id": gbif_id, "data_source": "gbif", "source_url": url,
             "license_name": "cc-by", "copyright_owner": "not provided",
             "license_link": "https://creativecommons.org/licenses/by/4.0/", "title": common}
        )  # fmt: skip
    string = pa.string()
    catalog = pa.Table.from_pylist(cat, schema=pa.schema([(c, string) for c in CATALOG_COLUMNS]))
    provenance = pa.Table.from_pylist(
        prov, schema=pa.schema([(c, string) for c in PROVENANCE_COLUMNS])
    )
    return catalog, provenance


def _catalog_row(uid, url, lineage, name, common, gbif_id, i) -> dict:
    shard = f"shard-{i // 1000:05d}.tar"
    return {
        "uuid": uid, "source_url": url,
        **dict(zip(("kingdom", "phylum", "class", "order", "family", "genus", "species"),
                   lineage, strict=True)),
        "scientific_name": name, "common": common, "data_source": "gbif",
        "publisher": "iNaturalist.org", "basisOfRecord": "HUMAN_OBSERVATION",
        "img_type": "Citizen Science", "source_id": gbif_id, "shard_filename": shard,
        "shard_file_path": f"gbif/images/{shard}", "base_dataset_file_path": "gbif/occurrence",
    }  # fmt: skip


def write_tol_view(world: World, root: str, directory: Path) -> tuple[Path, Path]:
    """Write DIRECTORY/catalog.parquet and DIRECTORY/provenance.parquet; return both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "catalog.parquet", directory / "provenance.parquet")
    for table, path in zip(tol_tables(world, root), paths, strict=True):
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
    return paths
