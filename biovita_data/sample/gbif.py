"""The sample world as GBIF sees it: occurrences of three sound archives and iNaturalist photos.

Real shapes (reference/gbif_*): media without `format`, synonyms (`taxonKey` != `acceptedTaxonKey`),
free-text media licences, and the Animal Sound Archive, part of whose media sit on a retired host
(those downloads fail, as the real archive's old host does). `export_dwca` writes the same
occurrences as a GBIF Darwin Core Archive download.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from biovita_data.sample import responses as R
from biovita_data.sample.world import SNAPSHOT, World

ANIMAL_SOUND_ARCHIVE = "b7ec1bf8-819b-11e2-bad2-00145eb45e9a"
XENO_CANTO = "b1047888-ae52-4179-9dd5-5448ea342a24"
INATURALIST = "50c9509d-22c7-4a22-a47d-8c48425ef4a7"
DATASET_NAMES = {
    ANIMAL_SOUND_ARCHIVE: "Animal Sound Archive",
    XENO_CANTO: "Xeno-canto - Bird sounds from around the world",
    INATURALIST: "iNaturalist research-grade observations",
}
GBIF_ID_BASE = {
    XENO_CANTO: 1_000_000_000,
    INATURALIST: 2_000_000_000,
    ANIMAL_SOUND_ARCHIVE: 3 * 10**9,
}
SYNONYM_KEY_BASE = 100_000_000  # a synonym's key: this + the accepted species' key
ASA_LICENSES = (  # the archive's free-text media licences -> weight
    ("CC BY 4.0", 0.3),
    ("http://creativecommons.org/licenses/by-nc-sa/4.0/legalcode", 0.25),
    ("Creative Commons Attribution-NonCommercial 4.0 International", 0.2),
    ("CC BY-NC-ND 4.0", 0.1),
    ("All rights reserved", 0.15),
)
ASA_RECORDISTS = ("Karl-Heinz Frommolt", "Günter Tembrock", "Dieter Kunze", "Sabine Baumann")
ASA_HOLDER = "Museum für Naturkunde Berlin"
MIME = {**R.AUDIO_MIME, **R.IMAGE_MIME}


@dataclass(frozen=True)
class ArchiveRecording:
    """One Animal Sound Archive recording (GBIF only)."""

    n: int
    species_index: int
    fmt: str
    seed: int
    duration_s: float
    license: str
    creator: str
    date: dt.date
    dead_host: bool  # its identifier is on the retired tierstimmenarchiv host
    synonym: bool


@lru_cache(maxsize=8)
def archive_recordings(world: World) -> tuple[ArchiveRecording, ...]:
    """Seeded: 0-3 recordings of each species that calls (those with a Xeno-canto group), but
    none of the rare species only Xeno-canto hears."""
    rng = np.random.default_rng([world.seed, 4242])
    names, weights = zip(*ASA_LICENSES, strict=True)
    out = []
    for sp in world.species:
        if sp.xc_group is None or sp.index in world.heard_only_on_xeno_canto:
            continue
        for _ in range(int(rng.integers(0, 4))):
            out.append(
                ArchiveRecording(
                    n=len(out) + 1,
                    species_index=sp.index,
                    fmt=str(rng.choice(["mp3", "wav"], p=[0.8, 0.2])),
                    seed=int(rng.integers(0, 2**31)),
                    duration_s=float(rng.uniform(3, 9)),
                    license=str(rng.choice(names, p=np.array(weights) / sum(weights))),
                    creator=str(rng.choice(ASA_RECORDISTS)),
                    date=dt.date(1960, 1, 1) + dt.timedelta(days=int(rng.integers(0, 20000))),
                    dead_host=bool(rng.random() < 0.3),
                    synonym=bool(rng.random() < 0.2),
                )
            )
    return tuple(out)


def archive_audio(world: World, n: int) -> bytes:
    from biovita_data.sample import audio

    rec = archive_recordings(world)[n - 1]
    sp = world.species[rec.species_index]
    return audio.render_audio(
        sp.call, fmt=rec.fmt, sample_rate=22050, channels=1, duration_s=rec.duration_s,
        seed=rec.seed,
    )  # fmt: skip


def _rank_keys(world: World, species_index: int) -> dict:
    sp = world.species[species_index]
    t = world.taxonomy.taxa[sp.taxon_id]
    out = {}
    for aid in (*t.ancestor_ids, t.id):
        a = world.taxonomy.taxa[aid]
        if a.rank in ("kingdom", "phylum", "class", "order", "family", "genus", "species"):
            out[a.rank] = a.name
            out[f"{a.rank}Key"] = a.id
    return out


def _occurrence(
    world: World,
    dataset: str,
    local_id: int,
    species_index: int,
    verbatim: str | None,
    when: dt.date,
    interpreted: dt.datetime,
    lat: float | None,
    lon: float | None,
    country: str | None,
    recorded_by: str,
    media: list[dict],
) -> dict:
    sp = world.species[species_index]
    keys = _rank_keys(world, species_index)
    synonym = verbatim is not None and verbatim.split()[0] != sp.genus
    gid = GBIF_ID_BASE[dataset] + local_id
    occ = {
        "key": gid,
        "datasetKey": dataset,
        "basisOfRecord": "MACHINE_OBSERVATION" if dataset != INATURALIST else "HUMAN_OBSERVATION",
        "occurrenceStatus": "PRESENT",
        "taxonKey": SYNONYM_KEY_BASE + sp.taxon_id if synonym else sp.taxon_id,
        **{k: v for k, v in keys.items() if k.endswith("Key")},
        "acceptedTaxonKey": sp.taxon_id,
        "scientificName": f"{verbatim if synonym else sp.name} Auct., 1900",
        "acceptedScientificName": f"{sp.name} Auct., 1900",
        **{k: v for k, v in keys.items() if not k.endswith("Key")},
        "genericName": (verbatim or sp.name).split()[0],
        "specificEpithet": sp.epithet,
        "taxonRank": "SPECIES",
        "taxonomicStatus": "SYNONYM" if synonym else "ACCEPTED",
        "decimalLatitude": lat,
        "decimalLongitude": lon,
        "year": when.year,
        "month": when.month,
        "day": when.day,
        "eventDate": when.isoformat(),
        "lastInterpreted": interpreted.strftime("%Y-%m-%dT%H:%M:%S.000+00:00"),
        "license": "http://creativecommons.org/licenses/by-nc/4.0/legalcode",
        "media": media,
        "datasetName": DATASET_NAMES[dataset],
        "recordedBy": recorded_by,
        "countryCode": country,
        "gbifID": str(gid),
        "occurrenceID": f"urn:sample:{dataset[:8]}:{local_id}",
        "vernacularName": sp.common_name,
    }
    return {k: v for k, v in occ.items() if v is not None}


def _at(d: dt.date) -> dt.datetime:
    return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)


@lru_cache(maxsize=16)
def occurrences(world: World, root: str, as_of: dt.date = SNAPSHOT) -> tuple[dict, ...]:
    """Every GBIF occurrence of the world published by `as_of`, in gbifID order."""
    out: list[dict] = []
    for rec in world.xc_recordings(as_of):
        if rec.restricted:
            continue  # Xeno-canto does not share restricted recordings with GBIF
        sp = world.species[rec.species_index]
        item = {  # no `format`: GBIF's Xeno-canto media carry none
            "type": "Sound",
            "identifier": f"{root}/xeno-canto/{rec.id}/download",
            "references": f"https://xeno-canto.org/{rec.id}",
            "creator": rec.recordist,
            "publisher": "Xeno-canto",
            "license": f"http:{rec.license}" if rec.license else None,
            "rightsHolder": rec.recordist,
        }
        verbatim = f"{sp.xc_gen} {sp.epithet}" if sp.xc_gen and sp.xc_gen != sp.genus else None
        out.append(
            _occurrence(
                world, XENO_CANTO, rec.id, rec.species_index, verbatim, rec.date,
                _at(rec.modified or rec.uploaded), rec.lat, rec.lon, rec.country, rec.recordist,
                [{k: v for k, v in item.items() if v is not None}],
            )
        )  # fmt: skip
    for o in world.inat_observations(as_of):
        if o.quality_grade != "research":
            continue
        media = []
        for pid in o.photo_ids:
            ph = world.photo_by_id[pid]
            media.append(_inat_item("StillImage", R.photo_url(root, ph, "original"), ph.fmt,
                                    ph.license, o.login))  # fmt: skip
        for sid in o.sound_ids:
            rec = world.recording_by_id[("inaturalist", sid)]
            media.append(_inat_item("Sound", R.sound_url(root, rec), rec.fmt, rec.license,
                                    o.login))  # fmt: skip
        out.append(
            _occurrence(
                world, INATURALIST, o.id, o.species_index, None, o.observed_on, o.updated_at,
                o.lat, o.lon, None, o.login, media,
            )
        )  # fmt: skip
    for rec in archive_recordings(world):
        sp = world.species[rec.species_index]
        name = f"{sp.genus}_{sp.epithet}_{rec.n}_short.{rec.fmt}"
        url = (
            f"{root}/tierstimmenarchiv/recordings/{name}"
            if rec.dead_host
            else f"{root}/gbif-media/asa/{rec.n}.{rec.fmt}"
        )
        item = {
            "type": "Sound",
            "identifier": url,
            "creator": rec.creator,
            "publisher": ASA_HOLDER,
            "license": rec.license,
            "rightsHolder": ASA_HOLDER,
        }
        if rec.fmt == "mp3":
            item["format"] = "audio/mpeg"
        verbatim = f"{sp.genus[:-1]}on {sp.epithet}" if rec.synonym else None
        out.append(
            _occurrence(
                world, ANIMAL_SOUND_ARCHIVE, rec.n, rec.species_index, verbatim, rec.date,
                _at(dt.date(2025, 3, 1)), None, None, "DE", rec.creator, [item],
            )
        )  # fmt: skip
    return tuple(sorted(out, key=lambda x: x["key"]))


def _inat_item(kind: str, url: str, fmt: str, code: str | None, login: str) -> dict:
    lic = None
    if code == "cc0":
        lic = "http://creativecommons.org/publicdomain/zero/1.0/legalcode"
    elif code:
        lic = f"http://creativecommons.org/licenses/{code.removeprefix('cc-')}/4.0/legalcode"
    item = {
        "type": kind,
        "format": MIME[fmt],
        "identifier": url,
        "creator": login,
        "publisher": "iNaturalist",
        "license": lic or "All rights reserved",
        "rightsHolder": login,
    }
    return item


@lru_cache(maxsize=16)
def by_key(world: World, root: str, as_of: dt.date) -> dict[int, dict]:
    return {o["key"]: o for o in occurrences(world, root, as_of)}


def species_match(world: World, name: str) -> dict:
    """`/species/match?name=`: exact names of the backbone, and genus synonyms of species."""
    clean = " ".join(name.split()).lower()
    for t in world.taxonomy.taxa.values():
        if t.name.lower() == clean and t.rank != "stateofmatter":
            return {"usageKey": t.id, "scientificName": t.name, "canonicalName": t.name,
                    "rank": t.rank.upper(), "status": "ACCEPTED", "confidence": 99,
                    "matchType": "EXACT", "synonym": False}  # fmt: skip
    for sp in world.species:
        old = f"{sp.genus[:-1]}on {sp.epithet}".lower()
        if clean == old:
            return {"usageKey": SYNONYM_KEY_BASE + sp.taxon_id, "acceptedUsageKey": sp.taxon_id,
                    "scientificName": name, "canonicalName": name, "rank": "SPECIES",
                    "status": "SYNONYM", "confidence": 97, "matchType": "EXACT",
                    "synonym": True}  # fmt: skip
    return {"confidence": 100, "matchType": "NONE", "synonym": False}


# ---------------------------------------------------------------------- search
class Refused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


def _matches(occ: dict, qs: dict[str, list[str]]) -> bool:
    taxa = {int(v) for v in qs.get("taxonKey", []) if v}
    if taxa and not taxa & {
        occ.get(f"{r}Key")
        for r in ("kingdom", "phylum", "class", "order", "family", "genus", "species", "taxon")
    }:
        return False  # fmt: skip
    datasets = set(qs.get("datasetKey", []))
    if datasets and occ["datasetKey"] not in datasets:
        return False
    types = set(qs.get("mediaType", []))
    if types and not types & {m.get("type") for m in occ["media"]}:
        return False
    for spec in qs.get("year", []):
        lo, _, hi = spec.partition(",")
        hi = hi or lo
        if not (lo in ("", "*") or occ["year"] >= int(lo)) or not (
            hi in ("", "*") or occ["year"] <= int(hi)
        ):
            return False
    for spec in qs.get("lastInterpreted", []):
        lo = spec.partition(",")[0]
        if lo not in ("", "*") and occ["lastInterpreted"][:10] < lo[:10]:
            return False
    return True


def search(
    world: World, root: str, as_of: dt.date, qs: dict[str, list[str]], max_offset: int
) -> dict:
    """`/occurrence/search`: filters, paging under the offset cap, facets."""

    def one(name: str, default: int) -> int:
        v = qs.get(name)
        return int(v[-1]) if v and v[-1] != "" else default

    limit, offset = min(one("limit", 20), 300), one("offset", 0)
    if offset + limit > max_offset:
        raise Refused(f"Max offset of {max_offset} exceeded: {offset} + {limit}")
    found = [o for o in occurrences(world, root, as_of) if _matches(o, qs)]
    body = {
        "offset": offset,
        "limit": limit,
        "endOfRecords": offset + limit >= len(found),
        "count": len(found),
        "results": found[offset : offset + limit],
        "facets": [],
    }
    for facet in qs.get("facet", []):
        field = facet[:-3] + "Key" if facet.lower().endswith("key") else facet
        counts: dict[str, int] = {}
        for o in found:
            v = o.get(field)
            if v is not None:
                counts[str(v)] = counts.get(str(v), 0) + 1
        name = "".join("_" + c if c.isupper() else c.upper() for c in field)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: one("facetLimit", 10)]
        body["facets"].append(
            {"field": name, "counts": [{"name": k, "count": n} for k, n in ranked]}
        )
    return body


# ---------------------------------------------------------------------- DwC-A export
DWC, GBIF, DC = (
    "http://rs.tdwg.org/dwc/terms/",
    "http://rs.gbif.org/terms/1.0/",
    "http://purl.org/dc/terms/",
)
# The occurrence.txt columns of a real download (reference/gbif_dwca_occurrence_columns.tsv).
_OCCURRENCE_TERMS = """gbifID accessRights bibliographicCitation language license modified
publisher references rightsHolder type institutionID collectionID datasetID institutionCode
collectionCode datasetName ownerInstitutionCode basisOfRecord informationWithheld
dataGeneralizations dynamicProperties occurrenceID catalogNumber recordNumber recordedBy
recordedByID individualCount organismQuantity organismQuantityType sex lifeStage
reproductiveCondition caste behavior vitality establishmentMeans degreeOfEstablishment pathway
georeferenceVerificationStatus occurrenceStatus preparations disposition associatedOccurrences
associatedReferences associatedSequences associatedTaxa otherCatalogNumbers occurrenceRemarks
organismID organismName organismScope associatedOrganisms previousIdentifications organismRemarks
materialEntityID materialEntityRemarks verbatimLabel materialSampleID eventID parentEventID
eventType fieldNumber eventDate eventTime startDayOfYear endDayOfYear year month day
verbatimEventDate habitat samplingProtocol sampleSizeValue sampleSizeUnit samplingEffort
fieldNotes eventRemarks locationID higherGeographyID higherGeography continent waterBody
islandGroup island countryCode stateProvince county municipality locality verbatimLocality
verbatimElevation verticalDatum verbatimDepth minimumDistanceAboveSurfaceInMeters
maximumDistanceAboveSurfaceInMeters locationAccordingTo locationRemarks decimalLatitude
decimalLongitude coordinateUncertaintyInMeters coordinatePrecision pointRadiusSpatialFit
verbatimCoordinateSystem verbatimSRS footprintWKT footprintSRS footprintSpatialFit georeferencedBy
georeferencedDate georeferenceProtocol georeferenceSources georeferenceRemarks geologicalContextID
earliestEonOrLowestEonothem latestEonOrHighestEonothem earliestEraOrLowestErathem
latestEraOrHighestErathem earliestPeriodOrLowestSystem latestPeriodOrHighestSystem
earliestEpochOrLowestSeries latestEpochOrHighestSeries earliestAgeOrLowestStage
latestAgeOrHighestStage lowestBiostratigraphicZone highestBiostratigraphicZone
lithostratigraphicTerms group formation member bed identificationID verbatimIdentification
identificationQualifier typeStatus identifiedBy identifiedByID dateIdentified
identificationReferences identificationVerificationStatus identificationRemarks taxonID
scientificNameID acceptedNameUsageID parentNameUsageID originalNameUsageID nameAccordingToID
namePublishedInID taxonConceptID scientificName acceptedNameUsage parentNameUsage
originalNameUsage nameAccordingTo namePublishedIn namePublishedInYear higherClassification
kingdom phylum class order superfamily family subfamily tribe subtribe genus genericName subgenus
infragenericEpithet specificEpithet infraspecificEpithet cultivarEpithet taxonRank
verbatimTaxonRank vernacularName nomenclaturalCode taxonomicStatus nomenclaturalStatus
taxonRemarks datasetKey publishingCountry lastInterpreted elevation elevationAccuracy depth
depthAccuracy distanceFromCentroidInMeters issue mediaType hasCoordinate hasGeospatialIssues
taxonKey acceptedTaxonKey kingdomKey phylumKey classKey orderKey familyKey genusKey subgenusKey
speciesKey species acceptedScientificName verbatimScientificName typifiedName protocol lastParsed
lastCrawled repatriated relativeOrganismQuantity projectId isSequenced gbifRegion
publishedByGbifRegion level0Gid level0Name level1Gid level1Name level2Gid level2Name level3Gid
level3Name iucnRedListCategory"""
OCCURRENCE_COLUMNS = _OCCURRENCE_TERMS.split()
_MULTIMEDIA_TERMS = (
    "gbifID type format identifier references title description source audience created creator "
    "contributor publisher license rightsHolder"
)
MULTIMEDIA_COLUMNS = _MULTIMEDIA_TERMS.split()
_DC_TERMS = {"accessRights", "bibliographicCitation", "language", "license", "modified",
             "publisher", "references", "rightsHolder", "type"}  # fmt: skip
_GBIF_START = OCCURRENCE_COLUMNS.index("datasetKey")
# verbatim.txt: the Darwin Core terms as the publisher sent them (no GBIF interpretation)
VERBATIM_COLUMNS = OCCURRENCE_COLUMNS[:_GBIF_START]
_VERBATIM_KEPT = ("gbifID", "occurrenceID", "basisOfRecord", "scientificName", "recordedBy",
                  "countryCode", "decimalLatitude", "decimalLongitude", "datasetName",
                  "license")  # fmt: skip
DOWNLOAD_DOI = "10.15468/dl.sample"  # the sample world's stand-in for a download's DOI


def _term(name: str, index: int, multimedia: bool = False) -> str:
    if name == "gbifID" or (not multimedia and index >= _GBIF_START and name not in (
            "elevation", "elevationAccuracy", "depth", "depthAccuracy")):  # fmt: skip
        return GBIF + name
    if multimedia or name in _DC_TERMS:
        return DC + name
    return DWC + name


def _block(tag: str, row_type: str, location: str, columns: list[str], media: bool) -> str:
    fields = "\n".join(
        f'    <field index="{i}" term="{_term(c, i, media)}"/>' for i, c in enumerate(columns)
    )
    core_id = "<id" if tag == "core" else "<coreid"
    return (
        f'  <{tag} encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" '
        f'fieldsEnclosedBy="" ignoreHeaderLines="1" rowType="{row_type}">\n'
        f"    <files>\n      <location>{location}</location>\n    </files>\n"
        f'    {core_id} index="0" />\n{fields}\n  </{tag}>'
    )


def meta_xml() -> str:
    return "\n".join(
        [
            '<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="metadata.xml">',
            _block("core", DWC + "Occurrence", "occurrence.txt", OCCURRENCE_COLUMNS, False),
            # as GBIF does: the publisher's own values, an extension with the core's rowType
            _block("extension", DWC + "Occurrence", "verbatim.txt", VERBATIM_COLUMNS, False),
            _block("extension", GBIF + "Multimedia", "multimedia.txt", MULTIMEDIA_COLUMNS, True),
            "</archive>",
        ]
    )


def _cell(value: object) -> str:
    if value is None:
        return ""
    return " ".join(str(value).split())  # GBIF strips tabs and newlines from downloads


def occurrence_line(occ: dict) -> str:
    values = {**occ, "mediaType": ";".join(sorted({m["type"] for m in occ["media"]}))}
    return "\t".join(_cell(values.get(c)) for c in OCCURRENCE_COLUMNS)


def verbatim_line(occ: dict) -> str:
    """The publisher's values: its verbatim name and date, no keys or classification."""
    values = {k: occ.get(k) for k in _VERBATIM_KEPT}
    values["eventDate"] = occ.get("eventDate", "").replace("-", "/")
    return "\t".join(_cell(values.get(c)) for c in VERBATIM_COLUMNS)


def export_dwca(world: World, root: str, dest: Path, as_of: dt.date = SNAPSHOT) -> dict[str, int]:
    """The world's GBIF occurrences as a download zip: meta.xml, metadata.xml (DOI, citation),
    occurrence.txt (interpreted), verbatim.txt (as published), multimedia.txt."""
    occs = occurrences(world, root, as_of)
    occ_txt, media_txt, verbatim_txt = io.StringIO(), io.StringIO(), io.StringIO()
    occ_txt.write("\t".join(OCCURRENCE_COLUMNS) + "\n")
    verbatim_txt.write("\t".join(VERBATIM_COLUMNS) + "\n")
    media_txt.write("\t".join(MULTIMEDIA_COLUMNS) + "\n")
    n_media = 0
    for occ in occs:
        occ_txt.write(occurrence_line(occ) + "\n")
        verbatim_txt.write(verbatim_line(occ) + "\n")
        for m in occ["media"]:
            media_txt.write("\t".join(_cell({**m, "gbifID": occ["gbifID"]}.get(c))
                                      for c in MULTIMEDIA_COLUMNS) + "\n")  # fmt: skip
            n_media += 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.xml", meta_xml())
        zf.writestr("metadata.xml", _eml(len(occs), as_of))
        zf.writestr("occurrence.txt", occ_txt.getvalue())
        zf.writestr("verbatim.txt", verbatim_txt.getvalue())
        zf.writestr("multimedia.txt", media_txt.getvalue())
    tmp.replace(dest)
    return {"occurrences": len(occs), "media": n_media}


def _eml(n: int, as_of: dt.date) -> str:
    """GBIF's download EML: the DOI as packageId and alternateIdentifier, the citation."""
    day = as_of.strftime("%d %B %Y")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<eml:eml xmlns:eml="eml://ecoinformatics.org/eml-2.1.1" '
        f'packageId="{DOWNLOAD_DOI}" system="http://gbif.org" scope="system">\n'
        f"  <dataset>\n    <alternateIdentifier>{DOWNLOAD_DOI}</alternateIdentifier>\n"
        f"    <title>GBIF Occurrence Download (sample world, {n} records)</title>\n"
        f"    <pubDate>{as_of.isoformat()}</pubDate>\n  </dataset>\n"
        "  <additionalMetadata><metadata><gbif>\n"
        f'    <citation identifier="{DOWNLOAD_DOI}">GBIF.org ({day}) GBIF Occurrence Download '
        f"https://doi.org/{DOWNLOAD_DOI}</citation>\n"
        "  </gbif></metadata></additionalMetadata>\n</eml:eml>\n"
    )
