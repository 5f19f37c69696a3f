"""A loopback HTTP server answering like Xeno-canto v3, iNaturalist v1, Open Data and GBIF v1."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import struct
import threading
import time
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from biovita_data.sample import responses as R
from biovita_data.sample.faults import FaultPlan
from biovita_data.sample.taxonomy import RANK_LEVEL
from biovita_data.sample.world import World

DEFAULT_XC_KEY = "sample-world-key"


class SampleServer:
    """The sample world's services on one loopback port; use as a context manager or start/stop.

    `xc_max_results` emulates a result set too large to page through (the crawler must split the
    query); `inat_window` is iNaturalist's 10,000-result limit for `page`-based paging.
    """

    def __init__(
        self,
        world: World,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | str = "none",
        xc_key: str = DEFAULT_XC_KEY,
        as_of: dt.date | None = None,
        xc_max_results: int = 5000,
        inat_window: int = 10_000,
        gbif_max_offset: int = 100_000,
    ) -> None:
        self.world = world
        self.faults = FaultPlan.named(faults, world.seed) if isinstance(faults, str) else faults
        self.xc_key = xc_key
        self.as_of = as_of or world.as_of  # default: the world's present (its epoch's)
        self.log: list[str] = []  # every request's path and query, in order (tests count them)
        self.xc_max_results = xc_max_results
        self.inat_window = inat_window
        self.gbif_max_offset = gbif_max_offset  # GBIF refuses offset + limit past this
        self.hits: dict[str, int] = {}
        self._hits_lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.service = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def root(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def urls(self) -> dict[str, str]:
        """The environment variables a client exports to use this server."""
        return {
            "XENO_CANTO_API_URL": f"{self.root}/xeno-canto/api/3",
            "INATURALIST_API_URL": f"{self.root}/inaturalist/v1",
            "INATURALIST_OPEN_DATA_URL": f"{self.root}/inaturalist-open-data",
            "BIOVITA_TRAITS_URL": f"{self.root}/traits",
            "GBIF_API_URL": f"{self.root}/gbif/v1",
        }

    @property
    def environment(self) -> dict[str, str]:
        """Everything a build from this server reads from the environment: its URLs, the
        Xeno-canto key it accepts and the loopback allowance its media downloads need."""
        from biovita_data.crawl.guard import ALLOW_LOOPBACK_ENV

        return {**self.urls, "XENO_CANTO_API_KEY": self.xc_key, ALLOW_LOOPBACK_ENV: "1"}

    def start(self) -> SampleServer:
        # a short poll interval: stop() waits up to one interval for the serving loop to end
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> SampleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, route: str, path: str = "") -> None:
        with self._hits_lock:
            self.hits[route] = self.hits.get(route, 0) + 1
            self.log.append(path)


class _Reply(Exception):
    def __init__(self, status: int, body: bytes, ctype: str, headers: dict | None = None):
        self.status, self.body, self.ctype, self.headers = status, body, ctype, headers or {}


def _json(status: int, obj: object) -> _Reply:
    return _Reply(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json")


def _one(qs: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    v = qs.get(name)
    return v[-1] if v else default


def _int(qs: dict[str, list[str]], name: str, default: int) -> int:
    raw = _one(qs, name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise _json(422, {"error": f"{name} must be an integer", "status": 422}) from None


class _Handler(BaseHTTPRequestHandler):
    server_version = "BioVITASample/1"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, every keep-alive answer waits
    # ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    @property
    def service(self) -> SampleServer:
        return self.server.service  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        fault = self.service.faults.decide(self.path)
        if fault == "reset":
            # RST instead of FIN: the client sees "connection reset by peer"
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()  # now: socketserver would shut down (FIN) before closing
            return
        if fault in ("429", "500", "503"):
            headers = (
                {"Retry-After": str(self.service.faults.retry_after)} if fault != "500" else {}
            )
            body = json.dumps({"error": "fault injected", "status": int(fault)}).encode()
            return self._send(_Reply(int(fault), body, "application/json", headers))
        if fault == "slow":
            time.sleep(self.service.faults.slow_s)
        try:
            reply = self._route()
        except _Reply as r:
            reply = r
        except Exception as exc:  # a bug in the sample server must still answer
            reply = _json(500, {"error": f"{type(exc).__name__}: {exc}"})
        self._send(reply, truncate=fault == "truncated")

    def _send(self, r: _Reply, truncate: bool = False) -> None:
        self.send_response(r.status)
        self.send_header("Content-Type", r.ctype)
        self.send_header("Content-Length", str(len(r.body)))
        for k, v in r.headers.items():
            self.send_header(k, v)
        if truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        if truncate:
            self.wfile.write(r.body[: max(1, len(r.body) // 2)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(r.body)

    # ------------------------------------------------------------------ routing
    def _route(self) -> _Reply:
        url = urlsplit(self.path)
        qs = parse_qs(url.query, keep_blank_values=True)
        path = url.path
        svc = self.service
        for pattern, handler in _ROUTES:
            m = re.fullmatch(pattern, path)
            if m:
                svc.count(handler.__name__, self.path)
                return handler(svc, qs, *m.groups())
        return _json(404, {"error": "not found", "status": 404})


# ---------------------------------------------------------------------- Xeno-canto
def xc_recordings(svc: SampleServer, qs: dict) -> _Reply:
    if _one(qs, "key") != svc.xc_key:
        return _Reply(401, json.dumps(R.XC_ERROR_KEY, indent=4).encode(), "application/json")
    query = _one(qs, "query", "") or ""
    per_page = _int(qs, "per_page", 100)
    page = _int(qs, "page", 1)
    if not 50 <= per_page <= 500:
        return _json(400, {"error": "client_error", "message": "per_page must be 50..500"})
    try:
        tags = R.parse_xc_query(query)
        if not tags:
            raise R.QueryError("empty query")
        recs = [r for r in _xc_sorted(svc.world, svc.as_of) if R.xc_match(svc.world, r, tags)]
    except R.QueryError as exc:
        return _json(400, {"error": "client_error", "message": str(exc)})
    if len(recs) > svc.xc_max_results:
        return _json(
            400,
            {"error": "client_error",
             "message": f"query matches {len(recs)} recordings, more than "
                        f"{svc.xc_max_results}; narrow it down"},
        )  # fmt: skip
    n_pages = max(1, -(-len(recs) // per_page))
    if page < 1 or page > n_pages:
        return _json(400, {"error": "client_error", "message": f"page must be 1..{n_pages}"})
    chunk = recs[(page - 1) * per_page : page * per_page]
    species = {r.species_index for r in recs}
    return _json(
        200,
        {
            "numRecordings": str(len(recs)),
            "numSpecies": str(len(species)),
            "page": page,
            "numPages": n_pages,
            "recordings": [R.xc_recording(svc.world, r, svc.root) for r in chunk],
        },
    )


@lru_cache(maxsize=16)
def _xc_sorted(world: World, as_of: dt.date) -> tuple:
    return tuple(sorted(world.xc_recordings(as_of), key=lambda r: r.id))


def xc_download(svc: SampleServer, qs: dict, rid: str) -> _Reply:
    rec = svc.world.recording_by_id.get(("xeno-canto", int(rid)))
    if rec is None or rec.restricted or rec.uploaded > svc.as_of:
        return _json(404, {"error": "not found"})
    return _Reply(200, svc.world.audio_bytes("xeno-canto", rec.id), R.AUDIO_MIME[rec.fmt])


# ---------------------------------------------------------------------- iNaturalist
def inat_observations(svc: SampleServer, qs: dict) -> _Reply:
    world = svc.world
    only_id = _one(qs, "only_id") == "true"  # ids only: up to 10,000 a page
    per_page = min(_int(qs, "per_page", 30), 10_000 if only_id else 200)
    page = _int(qs, "page", 1)
    if page * per_page > svc.inat_window:
        msg = "You can only view the first 10,000 results. Use id_above to page further."
        return _json(403, {"error": msg, "status": 403})
    obs = world.inat_observations(svc.as_of)
    taxon_ids = [int(x) for v in qs.get("taxon_id", []) for x in v.split(",") if x]
    if taxon_ids:
        wanted = set(taxon_ids)
        obs = [o for o in obs if wanted & set(_lineage(world, o.species_index))]
    grades = {g for v in qs.get("quality_grade", []) for g in v.split(",") if g}
    if grades:
        obs = [o for o in obs if o.quality_grade in grades]
    for field, attr in (("photo_license", "photo_ids"), ("sound_license", "sound_ids")):
        lic = {x.lower() for v in qs.get(field, []) for x in v.split(",") if x}
        if lic:
            obs = [o for o in obs if any(_media_license(world, attr, i) in lic
                                         for i in getattr(o, attr))]  # fmt: skip
    if _one(qs, "sounds") == "true":
        obs = [o for o in obs if o.sound_ids]
    if _one(qs, "photos") == "true":
        obs = [o for o in obs if o.photo_ids]
    if since := _one(qs, "updated_since"):
        t = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        obs = [o for o in obs if o.updated_at >= t]
    id_above, id_below = _int(qs, "id_above", -1), _int(qs, "id_below", 2**62)
    obs = [o for o in obs if id_above < o.id < id_below]
    order_by = _one(qs, "order_by", "created_at")
    desc = _one(qs, "order", "desc") == "desc"
    key = (lambda o: o.id) if order_by == "id" else (lambda o: (o.created_at, o.id))
    obs = sorted(obs, key=key, reverse=desc)
    chunk = obs[(page - 1) * per_page : page * per_page]
    return _json(
        200,
        {
            "total_results": len(obs),
            "page": page,
            "per_page": per_page,
            "results": [
                {"id": o.id} if only_id else R.inat_observation(world, o, svc.root) for o in chunk
            ],
        },
    )


def inat_deleted(svc: SampleServer, qs: dict) -> _Reply:
    """`/observations/deleted?since=`: ids of observations deleted since a time (the real API
    lists only the signed-in user's own; the sample world lists all)."""
    since = _one(qs, "since")
    if not since:
        return _json(422, {"error": "since is required", "status": 422})
    try:
        t = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return _json(422, {"error": f"since: not a date {since!r}", "status": 422})
    t = t if t.tzinfo else t.replace(tzinfo=dt.UTC)
    limit = dt.datetime.combine(svc.as_of, dt.time.max, dt.UTC)
    ids = sorted(i for i, when in svc.world.deleted_observations if t <= when <= limit)
    per_page = min(_int(qs, "per_page", 500), 500)
    page = _int(qs, "page", 1)
    chunk = ids[(page - 1) * per_page : page * per_page]
    return _json(
        200, {"total_results": len(ids), "page": page, "per_page": per_page, "results": chunk}
    )


def _media_license(world: World, attr: str, i: int) -> str:
    if attr == "photo_ids":
        lic = world.photo_by_id[i].license
    else:
        lic = world.recording_by_id[("inaturalist", i)].license
    return lic or "all rights reserved"


def _lineage(world: World, index: int) -> tuple[int, ...]:
    t = world.taxonomy.taxa[world.species[index].taxon_id]
    return (*t.ancestor_ids, t.id)


def inat_taxa(svc: SampleServer, qs: dict) -> _Reply:
    world = svc.world
    q = (_one(qs, "q", "") or "").strip().lower()
    rank = _one(qs, "rank")
    per_page = min(_int(qs, "per_page", 30), 200)
    page = _int(qs, "page", 1)
    taxa = sorted(world.taxonomy.taxa.values(), key=lambda t: t.id)
    # taxon_id: "these taxa or their descendants"; parent_id: direct children (as on iNaturalist)
    within = {int(x) for v in qs.get("taxon_id", []) for x in v.split(",") if x.isdigit()}
    parent = _one(qs, "parent_id")
    all_names = _one(qs, "all_names") == "true"
    synonyms: dict[int, list[str]] = {}
    for name, tid in sorted(world.taxonomy.synonyms.items()):
        synonyms.setdefault(tid, []).append(name)
    hits: list[tuple] = []
    for t in taxa:
        if rank and t.rank != rank:
            continue
        if within and not (within & {t.id, *t.ancestor_ids}):
            continue
        if parent and str(t.parent_id) != parent:
            continue
        # iNaturalist searches every name of a taxon, synonyms included; `matched_term` says which
        names = [t.name, t.common_name or "", *synonyms.get(t.id, ())]
        term = next((n for n in names if _term_matches(n.lower(), q)), None) if q else t.name
        if term is None:
            continue
        hits.append((t, term))
    hits.sort(key=lambda h: (h[1].lower() != q, -RANK_LEVEL[h[0].rank], h[0].id))
    chunk = hits[(page - 1) * per_page : page * per_page]
    return _json(
        200,
        {
            "total_results": len(hits),
            "page": page,
            "per_page": per_page,
            "results": [
                R.inat_taxon(world, t, search=True, term=term, all_names=all_names)
                for t, term in chunk
            ],
        },
    )


def _term_matches(name: str, q: str) -> bool:
    return name.startswith(q) or f" {q}" in name


def inat_taxa_ids(svc: SampleServer, qs: dict, ids: str) -> _Reply:
    world = svc.world
    try:
        wanted = [int(x) for x in ids.split(",") if x]
    except ValueError:
        return _json(422, {"error": "taxon ids must be integers", "status": 422})
    found = [world.taxonomy.taxa[i] for i in wanted if i in world.taxonomy.taxa]
    return _json(
        200,
        {
            "total_results": len(found),
            "page": 1,
            "per_page": len(found),
            "results": [R.inat_taxon(world, t) for t in found],
        },
    )


def inat_photo(svc: SampleServer, qs: dict, pid: str, size: str, ext: str) -> _Reply:
    photo = svc.world.photo_by_id.get(int(pid))
    if photo is None or ext.replace("jpeg", "jpg") != photo.fmt:
        return _json(404, {"error": "not found"})
    if svc.world.observation_by_id[photo.observation_id].created_at.date() > svc.as_of:
        return _json(404, {"error": "not found"})  # not uploaded yet at as_of
    if size not in ("square", "small", "medium", "large", "original"):
        return _json(404, {"error": f"unknown size {size}"})
    return _Reply(200, svc.world.photo_bytes(photo.id, size), R.IMAGE_MIME[photo.fmt])


def inat_sound(svc: SampleServer, qs: dict, sid: str, ext: str) -> _Reply:
    rec = svc.world.recording_by_id.get(("inaturalist", int(sid)))
    if rec is None or ext != rec.fmt or rec.uploaded > svc.as_of:
        return _json(404, {"error": "not found"})
    return _Reply(200, svc.world.audio_bytes("inaturalist", rec.id), R.AUDIO_MIME[rec.fmt])


# ---------------------------------------------------------------------- Open Data, traits
def open_data_table(svc: SampleServer, qs: dict, name: str) -> _Reply:
    if name not in R.OPEN_DATA_COLUMNS:
        return _json(404, {"error": "not found"})
    return _Reply(200, _open_data_cached(svc.world, name, svc.as_of), "application/gzip")


@lru_cache(maxsize=32)
def _open_data_cached(world: World, name: str, as_of: dt.date) -> bytes:
    return R.open_data_table(world, name, as_of)


def traits_file(svc: SampleServer, qs: dict, filename: str) -> _Reply:
    from biovita_data.sample import trait_tables

    names = {v: k for k, v in trait_tables.TABLES.items()}
    if filename not in names:
        return _json(404, {"error": "not found"})
    return _Reply(200, trait_tables.table_bytes(svc.world.taxonomy, names[filename]), "text/plain")


# ---------------------------------------------------------------------- GBIF
def gbif_search(svc: SampleServer, qs: dict) -> _Reply:
    from biovita_data.sample import gbif

    try:
        for name in ("limit", "offset", "facetLimit"):
            _int(qs, name, 0)
        body = gbif.search(svc.world, svc.root, svc.as_of, qs, svc.gbif_max_offset)
    except gbif.Refused as exc:
        return _json(400, {"message": str(exc), "status": 400})
    return _json(200, body)


def gbif_occurrence(svc: SampleServer, qs: dict, key: str) -> _Reply:
    from biovita_data.sample import gbif

    occ = gbif.by_key(svc.world, svc.root, svc.as_of).get(int(key))
    return _json(200, occ) if occ else _json(404, {"message": f"occurrence {key} not found"})


def gbif_species_match(svc: SampleServer, qs: dict) -> _Reply:
    from biovita_data.sample import gbif

    return _json(200, gbif.species_match(svc.world, _one(qs, "name", "") or ""))


def gbif_archive_audio(svc: SampleServer, qs: dict, n: str, ext: str) -> _Reply:
    from biovita_data.sample import gbif

    recs = gbif.archive_recordings(svc.world)
    if not 0 < int(n) <= len(recs) or recs[int(n) - 1].fmt != ext or recs[int(n) - 1].dead_host:
        return _json(404, {"error": "not found"})
    return _Reply(200, gbif.archive_audio(svc.world, int(n)), R.AUDIO_MIME[ext])


def retired_host(svc: SampleServer, qs: dict, name: str) -> _Reply:
    """The Animal Sound Archive's old media host: gone."""
    return _Reply(410, b"<html><body>This host has been retired.</body></html>", "text/html")


_ROUTES = (
    (r"/xeno-canto/api/3/recordings", xc_recordings),
    (r"/xeno-canto/(\d+)/download", xc_download),
    (r"/inaturalist/v1/observations", inat_observations),
    (r"/inaturalist/v1/observations/deleted", inat_deleted),
    (r"/inaturalist/v1/taxa", inat_taxa),
    (r"/inaturalist/v1/taxa/([0-9,]+|[^/]+)", inat_taxa_ids),
    (r"/inaturalist-static/photos/(\d+)/(\w+)\.(jpg|jpeg|png)", inat_photo),
    (r"/inaturalist-static/sounds/(\d+)\.(\w+)", inat_sound),
    (r"/inaturalist-open-data/(\w+)\.csv\.gz", open_data_table),
    (r"/inaturalist-open-data/photos/(\d+)/(\w+)\.(jpg|jpeg|png)", inat_photo),
    (r"/traits/([\w.]+)", traits_file),
    (r"/gbif/v1/occurrence/search", gbif_search),
    (r"/gbif/v1/occurrence/(\d+)", gbif_occurrence),
    (r"/gbif/v1/species/match", gbif_species_match),
    (r"/gbif-media/asa/(\d+)\.(\w+)", gbif_archive_audio),
    (r"/tierstimmenarchiv/recordings/([^/]+)", retired_host),
)
