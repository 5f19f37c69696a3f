"""What the sample services answer: Xeno-canto v3, iNaturalist v1 and Open Data, field for field."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import re
from collections import Counter
from functools import lru_cache

from biovita_data.sample.taxonomy import RANK_LEVEL, Taxon
from biovita_data.sample.world import Observation, Photo, Recording, World

AUDIO_MIME = {
    "mp3": "audio/mpeg",
    "wav": "audio/x-wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "m4a": "audio/mp4",
}
IMAGE_MIME = {"jpg": "image/jpeg", "png": "image/png"}
XC_ERROR_KEY = {
    "error": "client_error",
    "message": "Missing or invalid 'key' parameter. "
    "Visit https://xeno-canto.org/account to retrieve your API key.",
}
INAT_LICENSE_LABEL = {
    "cc0": "no rights reserved (CC0)",
    "cc-by": "some rights reserved (CC BY)",
    "cc-by-nc": "some rights reserved (CC BY-NC)",
    "cc-by-sa": "some rights reserved (CC BY-SA)",
    "cc-by-nc-sa": "some rights reserved (CC BY-NC-SA)",
    "cc-by-nd": "some rights reserved (CC BY-ND)",
    "cc-by-nc-nd": "some rights reserved (CC BY-NC-ND)",
    None: "all rights reserved",
}


# iNaturalist's iconic taxa among the world's taxa: Animalia and the four classes.
ICONIC_TAXON_IDS = frozenset({1, 3, 20978, 40151, 47158})


class QueryError(ValueError):
    """A malformed query (answered 400 by the server)."""


# ----------------------------------------------------------------------------- Xeno-canto
_TAG = re.compile(r'(\w+):("(?:[^"]*)"|\S+)')


def parse_xc_query(query: str) -> dict[str, str]:
    """Split an XC v3 tag query (`grp:birds gen:Foo cnt:"United States"`) into tags."""
    tags: dict[str, str] = {}
    rest = _TAG.sub(lambda m: tags.__setitem__(m.group(1).lower(), m.group(2).strip('"')) or "",
                    query)  # fmt: skip
    if rest.strip():
        raise QueryError(
            f"only tag queries are supported in API v3, got free text {rest.strip()!r}"
        )
    known = {"grp", "gen", "sp", "ssp", "en", "cnt", "q", "len", "since", "lic", "type", "nr"}
    unknown = set(tags) - known
    if unknown:
        raise QueryError(f"unknown search tag(s): {', '.join(sorted(unknown))}")
    return tags


def _xc_license_token(url: str) -> str:
    parts = url.rstrip("/").split("/")
    return "CC0" if "publicdomain" in parts else parts[-2].upper()


def _cmp(value: float, spec: str) -> bool:
    if spec.startswith(">"):
        return value > float(spec[1:])
    if spec.startswith("<"):
        return value < float(spec[1:])
    if "-" in spec:
        lo, hi = spec.split("-", 1)
        return float(lo) <= value <= float(hi)
    return abs(value - float(spec)) < 0.5


def xc_match(world: World, rec: Recording, tags: dict[str, str]) -> bool:
    sp = world.species[rec.species_index]
    checks = {
        "grp": lambda v: (sp.xc_group or "") == v.lower(),
        "gen": lambda v: sp.xc_gen.strip().lower() == v.lower(),
        "sp": lambda v: sp.xc_sp.strip().lower() == v.lower(),
        "ssp": lambda v: sp.xc_ssp.lower() == v.lower(),
        "en": lambda v: v.lower() in sp.common_name.lower(),
        "cnt": lambda v: rec.country.lower() == v.lower(),
        "type": lambda v: v.lower() in rec.type,
        "nr": lambda v: str(rec.id) == v,
        "lic": lambda v: _xc_license_token(rec.license or "") == v.upper(),
        "since": lambda v: rec.uploaded >= dt.date.fromisoformat(v),
        "len": lambda v: _cmp(rec.duration_s, v),
        "q": lambda v: _q_match(rec.quality, v),
    }
    try:
        return all(checks[k](v) for k, v in tags.items())
    except ValueError as exc:
        raise QueryError(f"bad tag value: {exc}") from exc


def _q_match(quality: str, spec: str) -> bool:
    order = "ABCDE"
    if spec.startswith((">", "<")):
        if quality not in order:
            return False
        i, j = order.index(quality), order.index(spec[1].upper())
        return i < j if spec[0] == ">" else i > j
    if spec == "0":  # Xeno-canto's tag for recordings without a rating
        return quality == "no score"
    return quality == spec.upper()


def _length(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60}:{s % 60:02d}"


def _protocol_relative(url: str) -> str:
    """`http://host/x` -> `//host/x`: how Xeno-canto writes `url` and the sonogram URLs."""
    return url.split(":", 1)[1] if url.startswith(("http://", "https://")) else url


def xc_background(world: World, rec: Recording) -> list[str]:
    """XC `also`: other species heard; for every fourth recording one of the world's species."""
    if rec.id % 4:
        return []
    other = world.species[(rec.species_index + 1 + rec.id % 7) % len(world.species)]
    return [other.name] if other.index != rec.species_index else []


def xc_recording(world: World, rec: Recording, root: str) -> dict:
    sp = world.species[rec.species_index]
    code = f"{rec.id * 7919 % 10**10:010d}"
    file_url = "" if rec.restricted else f"{root}/xeno-canto/{rec.id}/download"
    initials = "".join(w[0] for w in rec.recordist.split()).upper()
    stem = f"XC{rec.id}-{initials}-{rec.date:%Y%m%d}-{sp.xc_gen.strip()}{sp.xc_sp.strip()}"
    file_name = "" if rec.restricted else f"{stem}.{rec.fmt}"
    sono = f"{root}/xeno-canto/sounds/spectrograms/{code}/{rec.id}/"
    return {
        "id": str(rec.id),
        "gen": sp.xc_gen,
        "sp": sp.xc_sp,
        "ssp": sp.xc_ssp,
        "grp": sp.xc_group,
        "en": sp.common_name,
        "rec": rec.recordist,
        "cnt": rec.country,
        "loc": f"Site {rec.id % 97}, {rec.country}",
        "lat": "" if rec.lat is None else f"{rec.lat:.4f}",
        "lon": "" if rec.lon is None else f"{rec.lon:.4f}",
        "alt": str(rec.id % 2500),
        "type": rec.type,
        "sex": rec.sex,
        "stage": rec.stage,
        "method": "in the hand" if rec.id % 23 == 0 else "field recording",
        # page and sonogram URLs are protocol-relative, as Xeno-canto writes them
        "url": _protocol_relative(f"{root}/xeno-canto/{rec.id}"),
        "file": file_url,
        "file-name": file_name,
        "sono": {
            "small": _protocol_relative(sono + "grey-small.png"),
            "med": _protocol_relative(sono + "grey-medium.png"),
            "large": _protocol_relative(sono + "colour.png"),
            "full": None,
        },
        "osci": {"small": None, "med": None, "large": None},
        "lic": rec.license,
        "q": rec.quality,
        "length": _length(rec.duration_s),
        "time": "?" if rec.id % 5 == 0 else f"{rec.id % 24:02d}:{rec.id % 60:02d}",
        "date": rec.date.isoformat(),
        "uploaded": rec.uploaded.isoformat(),
        "also": xc_background(world, rec),
        "rmk": ""
        if rec.id % 5
        else f"Calling from cover.\r\n\r\nFiltered below {rec.id % 9}00 Hz.",
        "animal-seen": "yes" if rec.id % 3 else "no",
        "playback-used": "yes" if rec.id % 11 == 0 else "no",
        "temp": None,
        "regnr": "",
        "auto": "yes" if rec.id % 13 == 0 else "no",
        "dvc": "" if rec.id % 2 else "Zoom H5",
        "mic": "" if rec.id % 2 else "Telinga parabola",
        "smp": str(rec.sample_rate),
        "annotation-set": [],
    }


# ----------------------------------------------------------------------------- iNaturalist
def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="seconds")


def _details(d: dt.date | dt.datetime) -> dict:
    return {
        "date": (d.date() if isinstance(d, dt.datetime) else d).isoformat(),
        "week": d.isocalendar()[1],
        "month": d.month,
        "hour": d.hour if isinstance(d, dt.datetime) else 0,
        "year": d.year,
        "day": d.day,
    }


def photo_url(root: str, photo: Photo, size: str = "square") -> str:
    # iNaturalist's own photo URLs often end in `.jpeg` (Open Data's extension says `jpg`)
    ext = "jpeg" if photo.fmt == "jpg" and photo.id % 2 == 0 else photo.fmt
    return f"{root}/inaturalist-static/photos/{photo.id}/{size}.{ext}?{photo.seed % 10**10}"


def sound_url(root: str, rec: Recording) -> str:
    return f"{root}/inaturalist-static/sounds/{rec.id}.{rec.fmt}?{rec.seed % 10**10}"


def _attribution(login: str, license_code: str | None) -> str:
    return f"(c) {login}, {INAT_LICENSE_LABEL[license_code]}"


def inat_photo(photo: Photo, login: str, root: str) -> dict:
    return {
        "id": photo.id,
        "license_code": photo.license,
        "url": photo_url(root, photo),
        "attribution": _attribution(login, photo.license),
        "original_dimensions": {"width": photo.width, "height": photo.height},
        "flags": [],
    }


def inat_sound(rec: Recording, login: str, root: str) -> dict:
    return {
        "id": rec.id,
        "license_code": rec.license,
        "attribution": _attribution(login, rec.license),
        "native_sound_id": None,
        "secret_token": None,
        "file_url": sound_url(root, rec),
        "file_content_type": AUDIO_MIME[rec.fmt],
        "play_local": True,
        "subtype": None,
        "flags": [],
    }


def _user(obs: Observation) -> dict:
    return {
        "site_id": 1,
        "created_at": "2019-04-26T15:26:56+00:00",
        "id": obs.user_id,
        "login": obs.login,
        "spam": False,
        "suspended": False,
        "preferences": {},
        "login_autocomplete": obs.login,
        "login_exact": obs.login,
        "name": None,
        "name_autocomplete": None,
        "orcid": None,
        "icon": None,
        "observations_count": 55,
        "identifications_count": 0,
        "journal_posts_count": 0,
        "activity_count": 55,
        "species_count": 49,
        "universal_search_rank": 55,
        "roles": [],
        "icon_url": None,
    }


@lru_cache(maxsize=8)
def _synonyms_of(world: World) -> dict[int, tuple[str, ...]]:
    """Accepted taxon id -> its older names (the world's synonyms), sorted."""
    out: dict[int, list[str]] = {}
    for name, tid in sorted(world.taxonomy.synonyms.items()):
        out.setdefault(tid, []).append(name)
    return {tid: tuple(names) for tid, names in out.items()}


def taxon_names(world: World, taxon: Taxon) -> list[dict]:
    """iNaturalist's `names` (`all_names=true`): the valid name, older ones, the common name."""
    sci = [(taxon.name, True), *((n, False) for n in _synonyms_of(world).get(taxon.id, ()))]
    names = [
        {"is_valid": valid, "name": n, "position": i, "locale": "sci"}
        for i, (n, valid) in enumerate(sci)
    ]
    if taxon.common_name:
        names.append({"is_valid": True, "name": taxon.common_name, "position": 0, "locale": "en"})
    return names


def quirky_ancestor_ids(taxon: Taxon) -> list[int]:
    """`ancestor_ids` as /taxa/{id} writes it: usually ending with the taxon's own id, but for
    some taxa without it (as seen in real answers); a reader must not drop the last id blindly."""
    own = [taxon.id] if taxon.id % 3 else []
    return [*taxon.ancestor_ids, *own]


def inat_taxon(
    world: World, taxon: Taxon, *, search: bool = False, term: str = "", all_names: bool = False
) -> dict:
    """A taxon object: the observation-embedded form, or the /taxa search form."""
    ancestor_ids = [*taxon.ancestor_ids, taxon.id]
    # The nearest iconic taxon: the class, or Animalia above it (null only for Life).
    iconic = next((world.taxonomy.taxa[i] for i in reversed(ancestor_ids) if i in ICONIC_TAXON_IDS),
                  None)  # fmt: skip
    count = _observation_counts(world).get(taxon.id, 0)
    common = taxon.common_name
    base = {
        "ancestor_ids": ancestor_ids,
        "ancestry": "/".join(str(i) for i in taxon.ancestor_ids),
        "atlas_id": None,
        "complete_species_count": None,
        "current_synonymous_taxon_ids": None,
        "default_photo": None,
        "extinct": False,
        "flag_counts": {"unresolved": 0, "resolved": 0},
        "iconic_taxon_id": iconic.id if iconic else None,
        "iconic_taxon_name": iconic.name if iconic else None,
        "id": taxon.id,
        "is_active": taxon.active,
        "name": taxon.name,
        "observations_count": count,
        "parent_id": taxon.parent_id,
        # iNaturalist leaves the key out (it never answers null) when there is no common name.
        **({"preferred_common_name": common} if common is not None else {}),
        "rank": taxon.rank,
        "rank_level": RANK_LEVEL[taxon.rank],
        "taxon_changes_count": 0,
        "taxon_schemes_count": 2,
        "wikipedia_url": None,
    }
    if all_names:
        base["names"] = taxon_names(world, taxon)
    if search:
        return {**base, "matched_term": term or taxon.name, "vision": taxon.rank == "species"}
    base["ancestor_ids"] = quirky_ancestor_ids(taxon)
    return {
        **base,  # no "conservation_status": iNaturalist leaves it out when there is none
        "created_at": "2010-10-26T20:24:33+00:00",
        "endemic": False,
        "introduced": False,
        "min_species_ancestry": ",".join(str(i) for i in ancestor_ids),
        "min_species_taxon_id": taxon.id,
        "native": True,
        "photos_locked": False,
        "threatened": False,
        "universal_search_rank": count,
    }


@lru_cache(maxsize=8)
def _observation_counts(world: World) -> dict[int, int]:
    """Observations per taxon, descendants included."""
    counts: Counter = Counter()
    for o in world.observations:
        t = world.taxonomy.taxa[world.species[o.species_index].taxon_id]
        counts.update((*t.ancestor_ids, t.id))
    return dict(counts)


def geoprivacy(obs: Observation) -> tuple[str | None, str, int | None, int | None]:
    """(geoprivacy, taxon_geoprivacy, positional_accuracy, public_positional_accuracy):
    every seventh observation is obscured by its observer, every eleventh by its taxon; an
    obscured one's public coordinates are only good to ~28 km."""
    own = "obscured" if obs.id % 7 == 0 else None
    by_taxon = "obscured" if obs.id % 11 == 0 else "open"
    accuracy = None if obs.id % 3 == 0 else 5 + obs.id % 60
    public = 28_954 if own or by_taxon == "obscured" else accuracy
    return own, by_taxon, accuracy, public


def inat_observation(world: World, obs: Observation, root: str) -> dict:
    sp = world.species[obs.species_index]
    taxon = world.taxonomy.taxa[sp.taxon_id]
    photos = [world.photo_by_id[i] for i in obs.photo_ids]
    sounds = [world.recording_by_id[("inaturalist", i)] for i in obs.sound_ids]
    loc = f"{obs.lat},{obs.lon}"
    own_geo, taxon_geo, accuracy, public_accuracy = geoprivacy(obs)
    return {
        "quality_grade": obs.quality_grade,
        "taxon_geoprivacy": taxon_geo,
        "annotations": [],
        "uuid": obs.uuid,
        "observed_on_details": _details(obs.observed_on),
        "id": obs.id,
        "cached_votes_total": 0,
        "identifications_most_agree": True,
        "created_at": _iso(obs.created_at),
        "created_at_details": _details(obs.created_at),
        "created_time_zone": "Etc/UTC",
        "time_zone_offset": "+00:00",
        "time_observed_at": f"{obs.observed_on.isoformat()}T08:00:00+00:00",
        "observed_on": obs.observed_on.isoformat(),
        "observed_time_zone": "Etc/UTC",
        "observed_on_string": obs.observed_on.isoformat(),
        "updated_at": _iso(obs.updated_at),
        "species_guess": sp.common_name,
        "identifications_most_disagree": False,
        "tags": [],
        "positional_accuracy": accuracy,
        "comments_count": 0,
        "site_id": 1,
        "license_code": obs.license,
        "quality_metrics": [],
        "public_positional_accuracy": public_accuracy,
        "reviewed_by": [],
        "oauth_application_id": None,
        "flags": [],
        "description": None,
        "project_ids_with_curator_id": [],
        "sounds": [inat_sound(s, obs.login, root) for s in sounds],
        "observation_sounds": [
            {"id": s.id + 7, "uuid": obs.uuid, "sound": inat_sound(s, obs.login, root)}
            for s in sounds
        ],
        "place_ids": [],
        "captive": False,
        "taxon": inat_taxon(world, taxon),
        "ident_taxon_ids": [*taxon.ancestor_ids, taxon.id],
        "outlinks": [],
        "faves_count": 0,
        "ofvs": [],
        "num_identification_agreements": 1,
        "preferences": {"prefers_community_taxon": None},
        "comments": [],
        "map_scale": None,
        "uri": f"{root}/inaturalist/observations/{obs.id}",
        "project_ids": [],
        "community_taxon_id": taxon.id,
        "geojson": {"coordinates": [obs.lon, obs.lat], "type": "Point"},
        "owners_identification_from_vision": False,
        "identifications_count": 1,
        "obscured": public_accuracy != accuracy,
        "num_identification_disagreements": 0,
        "geoprivacy": own_geo,
        "location": loc,
        "private_location": loc,
        "votes": [],
        "spam": False,
        "user": _user(obs),
        "mappable": True,
        "identifications_some_agree": True,
        "project_ids_without_curator_id": [],
        "place_guess": f"Near {obs.lat:.1f},{obs.lon:.1f}",
        "identifications": [],
        "project_observations": [],
        "photos": [inat_photo(p, obs.login, root) for p in photos],
        "observation_photos": [
            {
                "id": p.id + 3,
                "position": p.position,
                "uuid": obs.uuid,
                "photo": inat_photo(p, obs.login, root),
            }
            for p in photos
        ],
        "faves": [],
        "non_owner_ids": [],
    }


# ----------------------------------------------------------------------------- Open Data
OPEN_DATA_COLUMNS = {
    "observations": ("observation_uuid", "observer_id", "latitude", "longitude",
                     "positional_accuracy", "taxon_id", "quality_grade", "observed_on",
                     "anomaly_score"),
    "photos": ("photo_uuid", "photo_id", "observation_uuid", "observer_id", "extension", "license",
               "width", "height", "position"),
    "taxa": ("taxon_id", "ancestry", "rank_level", "rank", "name", "active"),
    "observers": ("observer_id", "login", "name"),
}  # fmt: skip
OPEN_DATA_LICENSE = {
    "cc0": "CC0", "cc-by": "CC-BY", "cc-by-nc": "CC-BY-NC", "cc-by-sa": "CC-BY-SA",
    "cc-by-nc-sa": "CC-BY-NC-SA", "cc-by-nd": "CC-BY-ND", "cc-by-nc-nd": "CC-BY-NC-ND",
}  # fmt: skip


def open_data_table(world: World, name: str, as_of: dt.date) -> bytes:
    """One Open Data table as the bucket serves it: gzip'd TSV, no quoting, header first."""
    rows: list[tuple] = []
    obs = world.inat_observations(as_of)
    if name == "taxa":
        for t in sorted(world.taxonomy.taxa.values(), key=lambda t: t.id):
            anc = "/".join(str(i) for i in t.ancestor_ids)
            rows.append((t.id, anc, RANK_LEVEL[t.rank], t.rank, t.name, str(t.active).lower()))
    elif name == "observations":
        for o in obs:
            sp = world.species[o.species_index]
            public = geoprivacy(o)[3]
            rows.append((o.uuid, o.user_id, o.lat, o.lon, "" if public is None else public,
                         sp.taxon_id, o.quality_grade,
                         o.observed_on.isoformat(), f"{(o.id % 1000) / 1000:.3f}"))  # fmt: skip
    elif name == "photos":
        for o in obs:
            for pid in o.photo_ids:
                p = world.photo_by_id[pid]
                if p.license is None:  # the bucket holds openly licensed photos only
                    continue
                ext = "jpeg" if p.fmt == "jpg" and p.id % 2 else p.fmt
                lic = OPEN_DATA_LICENSE[p.license]
                rows.append(
                    (f"{p.seed:08x}-ph", p.id, o.uuid, o.user_id, ext, lic, p.width, p.height,
                     p.position)
                )  # fmt: skip
    elif name == "observers":
        seen = sorted({(o.user_id, o.login) for o in obs})
        rows = [(uid, login, "") for uid, login in seen]
    else:
        raise KeyError(name)
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n",
                   escapechar="\\")  # fmt: skip
    w.writerow(OPEN_DATA_COLUMNS[name])
    w.writerows(rows)
    return gzip.compress(buf.getvalue().encode("utf-8"), mtime=0)
