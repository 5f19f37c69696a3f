"""The sample world: seeded taxonomy, recordings, photos, their media, and the ground truth."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import uuid
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from biovita_data.sample.taxonomy import Species, Taxonomy, generate_taxonomy

SNAPSHOT = dt.date(2026, 10, 1)
EPOCH = dt.date(2012, 1, 1)
EPOCH_DAYS = 30  # world epoch N is the world SNAPSHOT + N * 30 days later (see evolve.py)

XC_LICENSES = {  # Xeno-canto licence URL -> weight
    "//creativecommons.org/licenses/by-nc-sa/4.0/": 0.50,
    "//creativecommons.org/licenses/by-nc-nd/4.0/": 0.08,
    "//creativecommons.org/licenses/by-nc-sa/3.0/": 0.06,
    "//creativecommons.org/licenses/by-sa/4.0/": 0.10,
    "//creativecommons.org/licenses/by/4.0/": 0.08,
    "//creativecommons.org/licenses/by-nc/4.0/": 0.10,
    "//creativecommons.org/licenses/by-nc-nd/2.5/": 0.03,
    "//creativecommons.org/publicdomain/zero/1.0/": 0.05,
}
INAT_LICENSES = {  # iNaturalist license_code (None: all rights reserved) -> weight
    "cc-by-nc": 0.42,
    "cc-by": 0.14,
    "cc0": 0.06,
    "cc-by-sa": 0.05,
    "cc-by-nc-sa": 0.09,
    "cc-by-nd": 0.03,
    "cc-by-nc-nd": 0.04,
    None: 0.17,
}
ALLOWED_LICENSE_CODES = ("cc0-1.0", "cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nc-sa")

COUNTRIES = (
    ("Brazil", -12.0, -50.0), ("Peru", -9.0, -75.0), ("United States", 39.0, -98.0),
    ("Kenya", 0.5, 37.5), ("India", 22.0, 79.0), ("Australia", -25.0, 134.0),
    ("Spain", 40.0, -3.7), ("Indonesia", -2.0, 118.0), ("Colombia", 4.0, -73.0),
    ("Madagascar", -19.0, 46.7), ("Sweden", 62.0, 15.0), ("Japan", 36.0, 138.0),
)  # fmt: skip
XC_TYPES = ("song", "call", "alarm call", "flight call", "song, call", "territorial call")
XC_QUALITY = ("A", "B", "C", "D", "E", "no score")
RECORDISTS = (
    "Ana Souza", "Jonathon Jongsma", "Mika Virtanen", "Priya Raman", "Kwame Mensah",
    "Lucía Fernández", "Tomás Novák", "Aiko Tanaka", "Sven Lindqvist", "Olu Adeyemi",
)  # fmt: skip
LOGINS = ("samroom", "birdnerd42", "frogwatcher", "nightbat", "katydidkate", "trailcam_ro")


@dataclass(frozen=True)
class RarePlan:
    """Per world size: how many species are rare, and what a rare species gets."""

    share: tuple[int, int]  # (a, b): max(3, n * a // b) of the n species are rare
    recordings: tuple[int, int]  # its Xeno-canto recordings, inclusive
    photos: tuple[int, int] | None  # its photos, inclusive (None: as many as any species)
    heard_elsewhere: bool  # whether iNaturalist sounds and the Animal Sound Archive have it too


RARE: dict[str, RarePlan] = {
    # 3 in 10 species are rare: 1-2 recordings in all and a few photos, so the split holds each
    # out as unseen (at most 2 recordings) and the unseen bench gets 50+ species (about 60).
    "default": RarePlan(share=(3, 10), recordings=(1, 2), photos=(3, 5), heard_elsewhere=False),
    "tiny": RarePlan(share=(1, 8), recordings=(1, 3), photos=None, heard_elsewhere=True),
}


@dataclass(frozen=True)
class Recording:
    """One audio record of a source: a Xeno-canto recording or an iNaturalist observation sound."""

    id: int
    source: str  # "xeno-canto" | "inaturalist"
    species_index: int
    fmt: str
    sample_rate: int
    channels: int
    duration_s: float
    seed: int
    license: str | None  # XC licence URL or iNat license_code
    recordist: str
    date: dt.date
    uploaded: dt.date
    country: str
    lat: float | None
    lon: float | None
    quality: str
    type: str
    sex: str
    stage: str
    observation_id: int | None = None
    restricted: bool = False
    flaw: str | None = None  # "corrupt" | "silent" | "duplicate" (media-level breakage)
    duplicate_of: int | None = None
    modified: dt.date | None = None  # last metadata change after upload (a later epoch's)


@dataclass(frozen=True)
class Photo:
    id: int
    observation_id: int
    species_index: int
    width: int
    height: int
    fmt: str  # "jpg" | "png"
    seed: int
    license: str | None
    position: int
    flaw: str | None = None  # "truncated" | "bomb"


@dataclass(frozen=True)
class Observation:
    id: int
    uuid: str
    species_index: int
    user_id: int
    login: str
    observed_on: dt.date
    created_at: dt.datetime
    updated_at: dt.datetime
    lat: float
    lon: float
    quality_grade: str
    license: str | None
    photo_ids: tuple[int, ...]
    sound_ids: tuple[int, ...]


@dataclass(frozen=True)
class Expected:
    """Ground truth for one media record: which species it is and what a correct pipeline does."""

    source: str
    modality: str  # "audio" | "image"
    record_id: int
    species_index: int
    raw_name: str
    fetch: str  # "keep" or the drop reason: license_not_allowed | restricted
    media: str  # "keep" or the materialize failure: undecodable | silent | duplicate | ...


def license_code(raw: str | None) -> str:
    """Normalise an XC licence URL or iNat license_code to an SPDX-like code (world-side view)."""
    if raw is None:
        return "all-rights-reserved"
    if raw.startswith("//") or raw.startswith("http"):
        parts = raw.rstrip("/").split("/")
        if "publicdomain" in parts:
            return "cc0-1.0"
        return f"cc-{parts[-2]}-{parts[-1]}"
    return "cc0-1.0" if raw == "cc0" else raw


def is_allowed(raw: str | None) -> bool:
    code = license_code(raw)
    if code == "cc0-1.0":
        return True
    return any(code == a or code.startswith(a + "-") for a in ALLOWED_LICENSE_CODES[1:]) and (
        "-nd" not in code
    )


class World:
    """A deterministic biodiversity world: same (size, seed) -> same records, same bytes."""

    def __init__(
        self, size: str = "default", seed: int = 0, epoch: int = 0, duplicates: bool = False
    ) -> None:
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, not {epoch!r}")
        self.size = size
        self.seed = seed
        self.epoch = epoch
        self.taxonomy: Taxonomy = generate_taxonomy(size, seed)
        self._generate()
        # planted copies and near-miss negatives with their ground truth (sample/duplicates.py)
        self.duplicates = duplicates
        self.planted: list = []
        if duplicates:
            from biovita_data.sample.duplicates import plant

            self.planted = plant(self)
        # iNaturalist observations deleted in a later epoch: (id, deleted at)
        self.deleted_observations: list[tuple[int, dt.datetime]] = []
        self.evolution: list[dict] = []  # what each epoch after 0 did (evolve.py)
        if epoch:
            from biovita_data.sample.evolve import evolve

            for e in range(1, epoch + 1):
                self.evolution.append(evolve(self, e))

    @property
    def as_of(self) -> dt.date:
        """The world's present: SNAPSHOT at epoch 0, 30 days later per epoch."""
        return SNAPSHOT + dt.timedelta(days=EPOCH_DAYS * self.epoch)

    @property
    def species(self) -> list[Species]:
        return self.taxonomy.species

    # ----------------------------------------------------------------- generation
    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *key])

    def _generate(self) -> None:
        rng = self._rng(1001)
        n = len(self.species)
        order = rng.permutation(n)
        n_single = max(2, n // 40)
        xc_only = {int(i) for i in order[:n_single]}
        inat_only = {int(i) for i in order[n_single : 2 * n_single]}
        plan = RARE[self.size]
        n_rare = max(3, n * plan.share[0] // plan.share[1])
        rare = {int(i) for i in order[2 * n_single : 2 * n_single + n_rare]}
        self.rare_species = frozenset(rare)
        # rare species no other archive hears: their Xeno-canto recordings are all their audio
        self.heard_only_on_xeno_canto = frozenset() if plan.heard_elsewhere else self.rare_species
        self.restricted_species = int(
            next(i for i in order[2 * n_single + n_rare :] if self.species[i].xc_group)
        )
        tiny = self.size == "tiny"
        self._temp_ids = itertools.count(1)
        recordings: list[Recording] = []
        photos: list[Photo] = []
        observations: list[Observation] = []
        xc_ids = iter(sorted(rng.choice(np.arange(100_000, 999_999), 20_000, replace=False)))
        long_left = 1 if tiny else 3
        for sp in self.species:
            srng = self._rng(2000 + sp.index)
            if sp.xc_group and sp.index not in inat_only:
                lo, hi = plan.recordings if sp.index in rare else (4, 15)
                n_rec = int(srng.integers(lo, hi + 1))
                if tiny:
                    n_rec = min(n_rec, int(srng.integers(3, 6)))
                for _ in range(n_rec):
                    duration = round(float(srng.uniform(2.0, 20.0)), 2)
                    if long_left and srng.random() < 0.05:
                        duration, long_left = round(float(srng.uniform(150, 300)), 2), long_left - 1
                    recordings.append(
                        self._recording(next(xc_ids), "xeno-canto", sp, srng, duration)
                    )
            if sp.index in xc_only:
                continue
            lo, hi = (3, 6) if tiny else (4, 15)
            if plan.photos and sp.index in rare:
                lo, hi = plan.photos
            n_photos = int(srng.integers(lo, hi + 1))
            with_sounds = sp.index in inat_only or (
                sp.xc_group
                and sp.index not in self.heard_only_on_xeno_canto
                and srng.random() < 0.25
            )
            while n_photos > 0:
                k = min(n_photos, int(srng.integers(1, 4)))
                n_photos -= k
                sounds = ()
                if with_sounds and srng.random() < 0.5:
                    sounds = (None,)  # filled below with real ids
                observations.append(self._observation(sp, srng, k, bool(sounds), photos))
            if sp.index in inat_only and not any(
                o.sound_ids for o in observations if o.species_index == sp.index
            ):
                observations.append(self._observation(sp, srng, 1, True, photos))
            # observations that are not research grade: the crawler must not fetch them
            if srng.random() < 0.2:
                observations.append(self._observation(sp, srng, 1, False, photos, grade="needs_id"))
        # Observation ids increase with creation time, as on iNaturalist.
        observations.sort(key=lambda o: (o.created_at, o.uuid))
        obs_id_base = 10_000_000 + int(rng.integers(0, 1_000_000))
        renumber = {}
        sound_id = iter(range(200_000 + int(rng.integers(0, 50_000)), 10**7))
        final_obs: list[Observation] = []
        for k, o in enumerate(observations):
            new_id = obs_id_base + 7 * k + int(rng.integers(0, 7))
            renumber[o.id] = new_id
            sound_ids: tuple[int, ...] = ()
            if o.sound_ids:
                sid = next(sound_id)
                sound_ids = (sid,)
                srng = self._rng(3000, k)
                sp = self.species[o.species_index]
                fmt = str(srng.choice(["m4a", "mp3", "wav"], p=[0.7, 0.2, 0.1]))
                rec = self._recording(
                    sid, "inaturalist", sp, srng, round(float(srng.uniform(2, 15)), 2)
                )
                recordings.append(
                    _replace(rec, fmt=fmt, observation_id=new_id, date=o.observed_on,
                             uploaded=o.created_at.date(), license=o.license)
                )  # fmt: skip
            final_obs.append(_replace(o, id=new_id, sound_ids=sound_ids))
        photos = [_replace(p, observation_id=renumber[p.observation_id]) for p in photos]
        self.observations = final_obs
        self.photos = photos
        self.recordings = recordings
        self._inject_flaws(rng)

    def _recording(
        self, rid: int, source: str, sp: Species, rng: np.random.Generator, duration: float
    ) -> Recording:
        country, clat, clon = COUNTRIES[int(rng.integers(len(COUNTRIES)))]
        has_geo = rng.random() > 0.05
        day = EPOCH + dt.timedelta(days=int(rng.integers(0, (SNAPSHOT - EPOCH).days - 400)))
        uploaded = day + dt.timedelta(days=int(rng.integers(0, 365)))
        lic_keys = list(XC_LICENSES) if source == "xeno-canto" else list(INAT_LICENSES)
        weights = np.array(
            list((XC_LICENSES if source == "xeno-canto" else INAT_LICENSES).values())
        )
        return Recording(
            id=int(rid),
            source=source,
            species_index=sp.index,
            fmt=str(rng.choice(["mp3", "wav", "flac", "ogg"], p=[0.72, 0.08, 0.08, 0.12])),
            sample_rate=int(rng.choice([22050, 32000, 44100, 48000], p=[0.15, 0.1, 0.5, 0.25])),
            channels=int(rng.choice([1, 2], p=[0.8, 0.2])),
            duration_s=duration,
            seed=int(rng.integers(0, 2**31)),
            license=lic_keys[int(rng.choice(len(lic_keys), p=weights / weights.sum()))],
            recordist=str(rng.choice(RECORDISTS)),
            date=day,
            uploaded=uploaded,
            country=country,
            lat=round(clat + float(rng.normal(0, 3)), 4) if has_geo else None,
            lon=round(clon + float(rng.normal(0, 3)), 4) if has_geo else None,
            quality=str(rng.choice(XC_QUALITY)),
            type=str(rng.choice(XC_TYPES)),
            sex=str(rng.choice(["", "male", "female", "male, female"], p=[0.6, 0.25, 0.1, 0.05])),
            stage=str(rng.choice(["", "adult", "juvenile"], p=[0.6, 0.3, 0.1])),
            restricted=source == "xeno-canto" and sp.index == self.restricted_species,
        )

    def _observation(
        self,
        sp: Species,
        rng: np.random.Generator,
        n_photos: int,
        with_sound: bool,
        photos: list[Photo],
        grade: str = "research",
    ) -> Observation:
        temp_id = -next(self._temp_ids)  # replaced by a time-ordered id once all exist
        _, clat, clon = COUNTRIES[int(rng.integers(len(COUNTRIES)))]
        observed = EPOCH + dt.timedelta(days=int(rng.integers(0, (SNAPSHOT - EPOCH).days - 60)))
        created = dt.datetime.combine(
            observed + dt.timedelta(days=int(rng.integers(0, 30))), dt.time(), dt.UTC
        ) + dt.timedelta(seconds=int(rng.integers(0, 86400)))
        updated = created + dt.timedelta(
            days=int(rng.integers(0, 20)), seconds=int(rng.integers(0, 86400))
        )
        lic_keys = list(INAT_LICENSES)
        weights = np.array(list(INAT_LICENSES.values()))
        user = int(rng.integers(len(LOGINS)))
        base_id = 90_000_000 + len(photos) * 3
        for pos in range(n_photos):
            big = rng.random() < 0.04
            long_side = int(rng.integers(2048, 3001)) if big else int(rng.integers(256, 1025))
            ratio = float(rng.choice([1.0, 0.75, 2 / 3, 0.5625]))
            w, h = long_side, max(64, int(long_side * ratio))
            if rng.random() < 0.5:
                w, h = h, w
            photos.append(
                Photo(
                    id=base_id + pos * 3 + int(rng.integers(0, 3)),
                    observation_id=temp_id,
                    species_index=sp.index,
                    width=w,
                    height=h,
                    fmt="png" if rng.random() < 0.1 else "jpg",
                    seed=int(rng.integers(0, 2**31)),
                    license=lic_keys[int(rng.choice(len(lic_keys), p=weights / weights.sum()))],
                    position=pos,
                )
            )
        return Observation(
            id=temp_id,
            uuid=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
            species_index=sp.index,
            user_id=1_000_000 + user * 7919,
            login=LOGINS[user],
            observed_on=observed,
            created_at=created,
            updated_at=updated,
            lat=round(clat + float(rng.normal(0, 3)), 6),
            lon=round(clon + float(rng.normal(0, 3)), 6),
            quality_grade=grade,
            license=lic_keys[int(rng.choice(len(lic_keys), p=weights / weights.sum()))],
            photo_ids=tuple(p.id for p in photos[-n_photos:]),
            sound_ids=(0,) if with_sound else (),
        )

    def _inject_flaws(self, rng: np.random.Generator) -> None:
        """Deliberately broken things: corrupt/silent/duplicate audio, truncated and bomb photos."""
        ok_xc = [
            i
            for i, r in enumerate(self.recordings)
            if r.source == "xeno-canto" and is_allowed(r.license) and not r.restricted
            and r.duration_s < 60
        ]  # fmt: skip
        picks = rng.choice(ok_xc, size=4, replace=False)
        a, b, c, d = (int(x) for x in picks)
        if self.recordings[c].id > self.recordings[d].id:  # the later id is the duplicate
            c, d = d, c
        self.recordings[a] = _replace(self.recordings[a], flaw="corrupt")
        self.recordings[b] = _replace(self.recordings[b], flaw="silent")
        # d is a byte-identical copy of c, under another id (and perhaps another species' name);
        # its metadata describes those bytes (format, sample rate, channels, duration).
        self.recordings[d] = _replace(
            self.recordings[d],
            flaw="duplicate",
            duplicate_of=self.recordings[c].id,
            fmt=self.recordings[c].fmt,
            sample_rate=self.recordings[c].sample_rate,
            channels=self.recordings[c].channels,
            duration_s=self.recordings[c].duration_s,
        )
        research = {o.id for o in self.observations if o.quality_grade == "research"}
        ok_ph = [
            i
            for i, p in enumerate(self.photos)
            if is_allowed(p.license) and p.observation_id in research and p.width < 1500
        ]
        e, f = (int(x) for x in rng.choice(ok_ph, size=2, replace=False))
        self.photos[e] = _replace(self.photos[e], flaw="truncated")
        self.photos[f] = _replace(self.photos[f], flaw="bomb", fmt="png")

    # ----------------------------------------------------------------- lookups
    @cached_property
    def recording_by_id(self) -> dict[tuple[str, int], Recording]:
        return {(r.source, r.id): r for r in self.recordings}

    @cached_property
    def photo_by_id(self) -> dict[int, Photo]:
        return {p.id: p for p in self.photos}

    @cached_property
    def observation_by_id(self) -> dict[int, Observation]:
        return {o.id: o for o in self.observations}

    def xc_recordings(self, as_of: dt.date | None = None) -> list[Recording]:
        as_of = as_of or self.as_of
        return [r for r in self.recordings if r.source == "xeno-canto" and r.uploaded <= as_of]

    def inat_observations(self, as_of: dt.date | None = None) -> list[Observation]:
        as_of = as_of or self.as_of
        return [o for o in self.observations if o.created_at.date() <= as_of]

    # ----------------------------------------------------------------- media
    def audio_bytes(self, source: str, rid: int) -> bytes:
        rec = self.recording_by_id[(source, rid)]
        if rec.flaw == "duplicate":
            return self.audio_bytes(source, rec.duplicate_of)
        if rec.flaw == "copy":  # planted (duplicates=True): an edited copy of another recording
            from biovita_data.sample.duplicates import copy_audio

            return copy_audio(self, source, rid)
        data = _render_audio(self, source, rid)
        if rec.flaw == "corrupt":
            # Keep only the magic (16 bytes): with the whole header kept, a WAV's garbage data
            # still decodes as PCM noise, so the file would not be undecodable.
            digest = hashlib.sha256(data).digest()
            return data[:16] + digest * (max(1, (len(data) - 16) // 32))
        return data

    def photo_bytes(self, pid: int, size: str = "original") -> bytes:
        from biovita_data.sample import images

        ph = self.photo_by_id[pid]
        if ph.flaw == "bomb":
            return images.decompression_bomb_png()
        data = _render_photo(self, pid)
        if ph.flaw == "truncated":
            return images.truncated(data)
        return data if size == "original" else images.resize_for_size_word(data, size)

    # ----------------------------------------------------------------- ground truth
    def kept_records(self, classes: tuple[str, ...] | None = None) -> dict[tuple, tuple]:
        """(source, modality, record_id) -> (licence code, species name, lat, lon) of every
        record a correct crawl of Xeno-canto and iNaturalist keeps at this epoch."""
        obs = self.observation_by_id
        out = {}
        for e in self.expected(classes):
            if e.fetch != "keep":
                continue
            if e.modality == "image":
                ph = self.photo_by_id[e.record_id]
                o, lic = obs[ph.observation_id], ph.license
                lat, lon = o.lat, o.lon
            else:
                r = self.recording_by_id[(e.source, e.record_id)]
                lic, lat, lon = r.license, r.lat, r.lon
                if r.source == "inaturalist":
                    o = obs[r.observation_id]
                    lat, lon = o.lat, o.lon
            out[(e.source, e.modality, str(e.record_id))] = (
                license_code(lic),
                e.raw_name,
                lat,
                lon,
            )
        return out

    def changes(
        self, from_epoch: int, to_epoch: int, classes: tuple[str, ...] | None = None
    ) -> dict:
        """Ground truth of an update from `from_epoch` to `to_epoch` (evolve.changes)."""
        from biovita_data.sample.evolve import changes

        return changes(self, from_epoch, to_epoch, classes)

    def expected(self, classes: tuple[str, ...] | None = None) -> list[Expected]:
        """What a correct crawl + materialize must produce, per media record (research grade)."""
        research = {o.id for o in self.observations if o.quality_grade == "research"}
        out: list[Expected] = []
        for r in self.recordings:
            sp = self.species[r.species_index]
            if classes and sp.class_name not in classes:
                continue
            if r.source == "inaturalist" and r.observation_id not in research:
                continue
            fetch = "keep"
            if r.restricted and r.source == "xeno-canto":
                fetch = "restricted"
            elif not is_allowed(r.license):
                fetch = "license_not_allowed"
            media = {"corrupt": "undecodable", "silent": "silent", "duplicate": "duplicate"}
            out.append(
                Expected(
                    r.source, "audio", r.id, r.species_index,
                    sp.audio_name if r.source == "xeno-canto" else sp.name,
                    fetch, media.get(r.flaw or "", "keep"),
                )
            )  # fmt: skip
        for p in self.photos:
            sp = self.species[p.species_index]
            if (classes and sp.class_name not in classes) or p.observation_id not in research:
                continue
            fetch = "keep" if is_allowed(p.license) else "license_not_allowed"
            media = {"truncated": "undecodable", "bomb": "decompression_bomb"}
            out.append(
                Expected("inaturalist", "image", p.id, p.species_index, sp.name, fetch,
                         media.get(p.flaw or "", "keep"))
            )  # fmt: skip
        return out


def _replace(obj, **changes):
    from dataclasses import replace

    return replace(obj, **changes)


@lru_cache(maxsize=256)
def _render_audio(world: World, source: str, rid: int) -> bytes:
    from biovita_data.sample import audio

    rec = world.recording_by_id[(source, rid)]
    sp = world.species[rec.species_index]
    return audio.render_audio(
        sp.call,
        fmt=rec.fmt,
        sample_rate=rec.sample_rate,
        channels=rec.channels,
        duration_s=rec.duration_s,
        seed=rec.seed,
        silent=rec.flaw == "silent",
    )


@lru_cache(maxsize=256)
def _render_photo(world: World, pid: int) -> bytes:
    from biovita_data.sample import images

    ph = world.photo_by_id[pid]
    sp = world.species[ph.species_index]
    return images.render_image(sp.look, width=ph.width, height=ph.height, fmt=ph.fmt, seed=ph.seed)
