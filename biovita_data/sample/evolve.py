"""How the sample world changes from one epoch to the next, and the ground truth of an update.

Epoch N is epoch N-1 plus one step, seeded by (world seed, N), every change dated inside the
epoch's 30 days (after the previous epoch's present, at most this one's): new Xeno-canto
recordings (uploaded then, so `since:` finds them) and new iNaturalist observations with photos
and a sound; withdrawn recordings and deleted observations (gone from every listing; the deleted
observations are listed by `/observations/deleted`); licence changes (one each to a licence the
default allow-list refuses, one to another allowed licence); a re-identified observation and one
with corrected coordinates; a taxon split (a new species, part of an old one's observations
re-identified to it) and a lump (a species' name becomes a synonym of a congener, its
observations re-identified); and a rare species receiving recordings enough to leave the unseen
side of the split's threshold. An observation's `updated_at` and a recording's `modified` record
each change, so the services' incremental filters see them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from biovita_data.sample.taxonomy import Species, Taxon

if TYPE_CHECKING:
    from biovita_data.sample.world import Observation, Photo, Recording, World

NOT_ALLOWED_XC = "//creativecommons.org/licenses/by-nc-nd/4.0/"
ALLOWED_XC = ("//creativecommons.org/licenses/by/4.0/", "//creativecommons.org/licenses/by-sa/4.0/")
UNSEEN_MAX_AUDIO = 2  # the split's default --unseen-max-audio


def evolve(world: World, epoch: int) -> dict:
    """Apply epoch `epoch`'s changes to `world` (at epoch - 1) in place; returns what was done."""
    from biovita_data.sample.world import EPOCH_DAYS, SNAPSHOT, _replace, is_allowed

    rng = np.random.default_rng([world.seed, 7000, epoch])
    start = SNAPSHOT + dt.timedelta(days=EPOCH_DAYS * (epoch - 1))

    def day() -> dt.date:
        return start + dt.timedelta(days=int(rng.integers(1, EPOCH_DAYS + 1)))

    def moment() -> dt.datetime:
        d = start + dt.timedelta(days=int(rng.integers(1, EPOCH_DAYS)))
        return dt.datetime.combine(d, dt.time(), dt.UTC) + dt.timedelta(
            seconds=int(rng.integers(0, 86400))
        )

    def pick(items: list, k: int = 1) -> list:
        if not items:
            return []
        idx = rng.choice(len(items), size=min(k, len(items)), replace=False)
        return [items[int(i)] for i in sorted(idx)]

    log: dict = {"epoch": epoch}
    flawed = {(r.source, r.id) for r in world.recordings if r.flaw}
    flawed |= {("xeno-canto", r.duplicate_of) for r in world.recordings if r.duplicate_of}
    flawed_obs = {p.observation_id for p in world.photos if p.flaw}
    flawed_obs |= {r.observation_id for r in world.recordings if r.observation_id and r.flaw}
    xc = [r for r in world.recordings if r.source == "xeno-canto"]
    plain_xc = [r for r in xc if (r.source, r.id) not in flawed and not r.restricted]
    touched: set[int] = set()  # recordings / observations changed once already this epoch

    # -------------------------------------------------------------- Xeno-canto
    gone = pick([r for r in plain_xc if r.species_index not in world.rare_species],
                max(1, round(0.05 * len(xc))))  # fmt: skip
    gone_ids = {r.id for r in gone}
    world.recordings = [
        r for r in world.recordings if not (r.source == "xeno-canto" and r.id in gone_ids)
    ]
    log["xc_withdrawn"] = sorted(gone_ids)
    survivors = [r for r in plain_xc if r.id not in gone_ids and is_allowed(r.license)]
    relicensed = pick(survivors, 2)
    new_lic = {relicensed[0].id: NOT_ALLOWED_XC}
    if len(relicensed) > 1:
        r = relicensed[1]
        new_lic[r.id] = ALLOWED_XC[0] if r.license != ALLOWED_XC[0] else ALLOWED_XC[1]
    log["xc_relicensed"] = {rid: lic for rid, lic in new_lic.items()}
    touched |= set(new_lic)
    world.recordings = [
        _replace(r, license=new_lic[r.id], modified=day())
        if r.source == "xeno-canto" and r.id in new_lic
        else r
        for r in world.recordings
    ]
    next_id = max(r.id for r in xc) + 1 + int(rng.integers(0, 50))
    species_with_xc = sorted({r.species_index for r in plain_xc} - world.rare_species)
    added: list[Recording] = []
    for _ in range(max(2, round(0.10 * len(xc)))):
        sp = world.species[int(rng.choice(species_with_xc))]
        added.append(_new_recording(world, next_id, sp, rng, day()))
        next_id += 1 + int(rng.integers(0, 20))
    # a rare (unseen) species gets recordings enough to pass the unseen threshold
    audio: dict[int, int] = {}
    for k in world.kept_records():
        if k[1] == "audio":
            r = world.recording_by_id.get((k[0], int(k[2])))
            if r is not None:
                audio[r.species_index] = audio.get(r.species_index, 0) + 1
    rare = sorted(
        i for i in world.rare_species
        if 0 < audio.get(i, 0) <= UNSEEN_MAX_AUDIO and world.species[i].xc_group
        and world.species[i].index != world.restricted_species
    )  # fmt: skip
    log["crossed_unseen"] = None
    if rare:
        sp = world.species[int(rng.choice(rare))]
        for _ in range(UNSEEN_MAX_AUDIO + 1):
            rec = _new_recording(world, next_id, sp, rng, day())
            added.append(replace(rec, license=ALLOWED_XC[0]))
            next_id += 1 + int(rng.integers(0, 20))
        log["crossed_unseen"] = sp.name
    world.recordings += added
    log["xc_added"] = [r.id for r in added]

    # -------------------------------------------------------------- iNaturalist
    research = [
        o for o in world.observations
        if o.quality_grade == "research" and o.id not in flawed_obs
    ]  # fmt: skip
    deleted = pick(research, max(1, round(0.05 * len(world.observations))))
    deleted_ids = {o.id for o in deleted}
    for o in deleted:
        world.deleted_observations.append((o.id, moment()))
    world.observations = [o for o in world.observations if o.id not in deleted_ids]
    world.photos = [p for p in world.photos if p.observation_id not in deleted_ids]
    world.recordings = [
        r for r in world.recordings
        if not (r.source == "inaturalist" and r.observation_id in deleted_ids)
    ]  # fmt: skip
    log["obs_deleted"] = sorted(deleted_ids)
    live = [o for o in research if o.id not in deleted_ids]
    photo_by_id = {p.id: p for p in world.photos}
    obs_edit: dict[int, dict] = {}  # observation id -> field changes
    photo_lic: dict[int, str | None] = {}
    with_allowed = [o for o in live if any(is_allowed(photo_by_id[i].license) for i in o.photo_ids)]
    for o, to in zip(pick(with_allowed, 2), (None, "cc-by"), strict=False):
        pid = next(i for i in o.photo_ids if is_allowed(photo_by_id[i].license))
        lic = to if to is None or photo_by_id[pid].license != to else "cc0"
        photo_lic[pid] = lic
        obs_edit.setdefault(o.id, {})
    log["photo_relicensed"] = dict(photo_lic)
    # a re-identification within the genus, and coordinates corrected
    genus_of = {s.index: s.genus for s in world.species}
    congeners = {
        i: [s.index for s in world.species if s.genus == genus_of[i] and s.index != i]
        for i in genus_of
    }
    free = [o for o in live if o.id not in obs_edit and congeners[o.species_index]]
    reid = pick(free, 1)
    log["reidentified"] = {}
    for o in reid:
        to = int(rng.choice(congeners[o.species_index]))
        obs_edit[o.id] = {"species_index": to}
        log["reidentified"][o.id] = (world.species[o.species_index].name, world.species[to].name)
    moved = pick([o for o in live if o.id not in obs_edit], 1)
    for o in moved:
        obs_edit[o.id] = {"lat": round(o.lat + 0.25, 6), "lon": round(o.lon - 0.25, 6)}
    log["coordinates"] = [o.id for o in moved]

    # -------------------------------------------------------------- split and lump
    by_species: dict[int, list[Observation]] = {}
    for o in live:
        if o.id not in obs_edit:
            by_species.setdefault(o.species_index, []).append(o)
    splittable = sorted(
        i for i, obs in by_species.items()
        if len(obs) >= 2 and i != world.restricted_species and congeners[i]
    )  # fmt: skip
    log["split"] = log["lump"] = None
    if splittable:
        parent = world.species[int(rng.choice(splittable))]
        child = _split_species(world, parent, epoch)
        obs = by_species.pop(parent.index)
        for o in obs[len(obs) // 2 :]:
            obs_edit[o.id] = {"species_index": child.index}
        log["split"] = {"from": parent.name, "new": child.name,
                        "observations": [o.id for o in obs[len(obs) // 2 :]]}  # fmt: skip
        lumpable = sorted(
            i for i in by_species
            if i != world.restricted_species and congeners[i] and i != parent.index
            and all(c < len(world.species) - 1 for c in congeners[i])
        )  # fmt: skip
        if lumpable:
            gone_sp = world.species[int(rng.choice(lumpable))]
            into = world.species[int(rng.choice(congeners[gone_sp.index]))]
            taxa = world.taxonomy.taxa
            taxa[gone_sp.taxon_id] = replace(taxa[gone_sp.taxon_id], active=False)
            world.taxonomy.synonyms[gone_sp.name] = into.taxon_id
            for o in by_species.pop(gone_sp.index):
                obs_edit[o.id] = {"species_index": into.index}
            log["lump"] = {"from": gone_sp.name, "into": into.name}

    # -------------------------------------------------------------- new observations
    n_new = max(2, round(0.10 * len(world.observations)))
    heard = sorted({o.species_index for o in live})
    new_obs: list[Observation] = []
    new_photos: list[Photo] = []
    obs_id = max(o.id for o in world.observations) + 1 + int(rng.integers(0, 7))
    photo_base = max(p.id for p in world.photos) + 3
    sound_id = max(r.id for r in world.recordings if r.source == "inaturalist") + 1
    for k in range(n_new):
        sp = world.species[int(rng.choice(heard))]
        tmp: list = []
        o = world._observation(sp, rng, int(rng.integers(1, 4)), False, tmp)
        created = moment()
        sound_ids: tuple[int, ...] = ()
        if k == 0:  # one new observation with a sound
            rec = _new_recording(world, sound_id, sp, rng, created.date())
            world.recordings.append(
                replace(rec, source="inaturalist", fmt="mp3", observation_id=obs_id,
                        date=created.date(), license="cc-by", restricted=False)
            )  # fmt: skip
            sound_ids = (sound_id,)
        o = replace(o, id=obs_id, created_at=created, updated_at=created, sound_ids=sound_ids,
                    observed_on=created.date() - dt.timedelta(days=1),
                    photo_ids=tuple(photo_base + 3 * j for j in range(len(tmp))))  # fmt: skip
        for j, p in enumerate(tmp):
            new_photos.append(replace(p, id=photo_base + 3 * j, observation_id=obs_id))
        photo_base += 3 * len(tmp) + 3
        obs_id += 1 + int(rng.integers(0, 7))
        new_obs.append(o)
    log["obs_added"] = [o.id for o in new_obs]

    # -------------------------------------------------------------- apply the edits
    when = {oid: moment() for oid in sorted(set(obs_edit) | _owners(world, photo_lic))}
    sp_of = {oid: e["species_index"] for oid, e in obs_edit.items() if "species_index" in e}
    edited = []
    for o in world.observations:
        if o.id in when:
            o = replace(o, **obs_edit.get(o.id, {}), updated_at=max(when[o.id], o.updated_at))
        edited.append(o)
    world.observations = edited + new_obs
    world.photos = [
        replace(p, license=photo_lic.get(p.id, p.license),
                species_index=sp_of.get(p.observation_id, p.species_index))
        for p in world.photos
    ] + new_photos  # fmt: skip
    world.recordings = [
        replace(r, species_index=sp_of[r.observation_id], modified=when[r.observation_id].date())
        if r.source == "inaturalist" and r.observation_id in sp_of
        else r
        for r in world.recordings
    ]
    for name in ("recording_by_id", "photo_by_id", "observation_by_id"):
        world.__dict__.pop(name, None)
    return log


def _owners(world: World, photo_lic: dict[int, str | None]) -> set[int]:
    return {p.observation_id for p in world.photos if p.id in photo_lic}


def _new_recording(
    world: World, rid: int, sp: Species, rng: np.random.Generator, uploaded: dt.date
) -> Recording:
    """A Xeno-canto recording uploaded on `uploaded` (recorded a few days before)."""
    rec = world._recording(rid, "xeno-canto", sp, rng, round(float(rng.uniform(2.0, 20.0)), 2))
    return replace(rec, uploaded=uploaded, date=uploaded - dt.timedelta(days=3))


def _split_species(world: World, parent: Species, epoch: int) -> Species:
    """A new species split off `parent`: same genus, a new epithet and taxon, its own call."""
    taxa = world.taxonomy.taxa
    tid = 950_000 + 100 * epoch + parent.index % 100
    while tid in taxa:
        tid += 1
    epithet = f"{parent.epithet[:4]}ensis" if not parent.epithet.endswith("ensis") else "borealis"
    name = f"{parent.genus} {epithet}"
    genus = taxa[parent.genus_taxon_id]
    taxa[tid] = Taxon(tid, name, "species", genus.id, (*genus.ancestor_ids, genus.id),
                      f"Northern {parent.common_name}")  # fmt: skip
    child = replace(
        parent,
        index=len(world.species),
        taxon_id=tid,
        name=name,
        common_name=f"Northern {parent.common_name}",
        name_variant="none",
        xc_gen=parent.genus,
        xc_sp=epithet,
        xc_ssp="",
        call=replace(parent.call, mod_rate=round(parent.call.mod_rate + 1.5, 2)),
        look=replace(parent.look, pattern_angle=(parent.look.pattern_angle + 90) % 180),
        traits=dict(parent.traits),
    )
    world.taxonomy.species.append(child)
    return child


def changes(
    world: World, from_epoch: int, to_epoch: int, classes: tuple[str, ...] | None = None
) -> dict:
    """What an update of a crawl (Xeno-canto + iNaturalist, default allow-list) from
    `from_epoch` to `to_epoch` must do: records added, removed (by reason: `withdrawn` when the
    record is gone, `licence` when it stays under a licence the allow-list refuses) and changed
    (licence, species name or coordinates), each keyed (source, modality, record_id); plus the
    species that changed name (`reidentified`) and the steps' logs."""
    from biovita_data.sample.world import World, is_allowed

    def at(e: int) -> World:
        return world if e == world.epoch else World(world.size, world.seed, e)

    old, new = at(from_epoch), at(to_epoch)
    a, b = old.kept_records(classes), new.kept_records(classes)
    removed = {}
    for key in sorted(set(a) - set(b)):
        source, modality, rid = key
        if modality == "image":
            thing = new.photo_by_id.get(int(rid))
            lic = thing.license if thing else None
        else:
            thing = new.recording_by_id.get((source, int(rid)))
            lic = thing.license if thing else None
        removed[key] = "licence" if thing is not None and not is_allowed(lic) else "withdrawn"
    both = sorted(set(a) & set(b))
    changed = [k for k in both if a[k] != b[k]]
    return {
        "added": sorted(set(b) - set(a)),
        "removed": removed,
        "changed": changed,
        "reidentified": {k: (a[k][1], b[k][1]) for k in changed if a[k][1] != b[k][1]},
        "log": new.evolution[from_epoch:to_epoch],
    }
