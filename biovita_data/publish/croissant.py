"""croissant.json: the published folder described in Croissant 1.0 (MLCommons' JSON-LD dataset
format), written by hand from the folder's Parquet schemas so publishing needs no extra package
(`mlcroissant` validates it in the tests).

Each config is a `cr:FileSet` of its Parquet shards (`audio/*.parquet`, ...) and a `cr:RecordSet`
whose fields are the shards' columns, plus `split` read from each shard's file name; the media
columns are `sc:AudioObject` / `sc:ImageObject` (their `bytes`). The sources' citations (a GBIF
download's DOI kept by `import-dwca`, the trait releases' DOIs) are listed under `citation`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.core import layout
from biovita_data.publish.features import CONFIGS, SPLITS

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
MEDIA_TYPES = {"audio": "sc:AudioObject", "image": "sc:ImageObject"}


def data_type(t: pa.DataType) -> str:
    """A Parquet column's Croissant data type."""
    if pa.types.is_boolean(t):
        return "sc:Boolean"
    if pa.types.is_integer(t):
        return "sc:Integer"
    if pa.types.is_floating(t):
        return "sc:Float"
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return "sc:Date"
    return "sc:Text"


def _field(config: str, fileset: str, f: pa.Field) -> dict[str, Any]:
    source: dict[str, Any] = {"fileSet": {"@id": fileset}, "extract": {"column": f.name}}
    entry: dict[str, Any] = {"@type": "cr:Field", "@id": f"{config}/{f.name}", "name": f.name}
    if f.name in MEDIA_TYPES and pa.types.is_struct(f.type):
        entry["dataType"] = MEDIA_TYPES[f.name]
        source["transform"] = {"jsonPath": "bytes"}
    elif pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
        entry["dataType"] = data_type(f.type.value_type)
        entry["repeated"] = True
    else:
        entry["dataType"] = data_type(f.type)
    entry["source"] = source
    return entry


def citations(out: Path) -> list[str]:
    """The sources' citations kept in OUT: GBIF downloads (DOI), the public trait releases."""
    found: list[str] = []
    gbif = layout.raw_dir(out, "gbif") / "citation.json"
    if gbif.is_file():
        for d in json.loads(gbif.read_text()).get("downloads", []):
            text = d.get("citation") or (f"https://doi.org/{d['doi']}" if d.get("doi") else None)
            if text:
                found.append(text)
    traits = layout.traits_cache_dir(out) / "releases.json"
    if traits.is_file():
        for name, rec in sorted(json.loads(traits.read_text()).items()):
            if isinstance(rec, dict) and rec.get("doi"):
                found.append(f"{name}: https://doi.org/{rec['doi']}")
    return list(dict.fromkeys(found))


def semantic_version(tag: str) -> str | None:
    """`v2026.12` -> `2026.12.0`, `2026.05.01` -> `2026.5.1`; None when the tag has no numbers."""
    found = re.fullmatch(r"[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?", tag or "")
    if not found:
        return None
    return ".".join(str(int(part or 0)) for part in found.groups())


def croissant(
    folder: Path,
    repo_id: str,
    *,
    license_code: str,
    pretty_name: str,
    description: str,
    build: dict,
    cite_as: str,
    sources: list[str],
) -> dict[str, Any]:
    """The Croissant metadata of a published folder (its Parquet shards must be written)."""
    release = build.get("release") if isinstance(build.get("release"), dict) else {}
    version = (release or {}).get("tag")
    url = f"https://huggingface.co/datasets/{repo_id}"
    distribution: list[dict[str, Any]] = []
    record_sets: list[dict[str, Any]] = []
    for config in CONFIGS:
        shards = sorted((folder / config).glob("*.parquet"))
        if not shards:
            continue
        fileset = f"parquet-files-for-config-{config}"
        distribution.append(
            {
                "@type": "cr:FileSet",
                "@id": fileset,
                "name": fileset,
                "description": f"The Parquet shards of config `{config}`.",
                "encodingFormat": "application/x-parquet",
                "includes": f"{config}/*.parquet",
            }
        )
        splits = "|".join(SPLITS[config])
        fields = [
            {
                "@type": "cr:Field",
                "@id": f"{config}/split",
                "name": "split",
                "description": "The split, from the shard's file name.",
                "dataType": "sc:Text",
                "source": {
                    "fileSet": {"@id": fileset},
                    "extract": {"fileProperty": "fullpath"},
                    "transform": {"regex": f"^(?:.*/)?({splits})-\\d{{5}}-of-\\d{{5}}\\.parquet$"},
                },
            }
        ]
        fields += [_field(config, fileset, f) for f in pq.read_schema(shards[0])]
        record_sets.append(
            {
                "@type": "cr:RecordSet",
                "@id": config,
                "name": config,
                "description": f"Config `{config}` (splits: {', '.join(SPLITS[config])}).",
                "field": fields,
            }
        )
    meta: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": repo_id.split("/", 1)[1],
        "alternateName": pretty_name,
        "description": description,
        "url": url if not version else f"{url}/tree/{version}",
        "license": f"https://spdx.org/licenses/{license_code.upper()}.html"
        if license_code != "other"
        else f"{url}/blob/{version or 'main'}/LICENSE.md",
        "creator": {"@type": "sc:Organization", "name": repo_id.split("/", 1)[0]},
        "citeAs": cite_as,
        "distribution": distribution,
        "recordSet": record_sets,
    }
    snapshot = str(build.get("snapshot", ""))
    semver = semantic_version(version or snapshot[:10].replace("-", "."))
    if semver:  # Croissant wants MAJOR.MINOR.PATCH; the tag itself is in `url`
        meta["version"] = semver
    if snapshot[:10]:
        meta["datePublished"] = snapshot[:10]
    if sources:
        meta["citation"] = sources
    return meta


def croissant_inputs(
    repo_id: str, license_code: str, pretty_name: str | None, build: dict
) -> dict[str, Any]:
    """croissant()'s arguments for a folder published as `repo_id` (the card's licence)."""
    namespace, name = repo_id.split("/", 1)
    snapshot = str(build.get("snapshot", ""))
    year = snapshot[:4] if snapshot[:4].isdigit() else "2026"
    key = "".join(ch for ch in f"{namespace}{year}{name}".lower() if ch.isalnum())
    title = pretty_name or name
    return {
        "repo_id": repo_id,
        "license_code": license_code,
        "pretty_name": title,
        "description": (
            "A tri-modal biodiversity corpus in the manner of BioVITA: animal sounds, animal "
            "photos and taxonomic text with 34 ecological trait labels per species, paired at "
            "the species level, with the BioVITA-Bench retrieval benchmark (see README.md)."
        ),
        "build": build,
        "cite_as": (
            f"@misc{{{key}, title = {{{title}}}, author = {{{namespace}}}, year = {{{year}}}, "
            f"howpublished = {{\\url{{https://huggingface.co/datasets/{repo_id}}}}}}}"
        ),
    }


def write_croissant(folder: Path, out: Path, meta_inputs: dict[str, Any]) -> Path:
    """FOLDER/croissant.json from `croissant(folder, **meta_inputs)` plus OUT's citations."""
    meta = croissant(folder, **meta_inputs, sources=citations(out))
    path = folder / "croissant.json"
    path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return path
