"""The sample world: determinism, taxonomy shape, record mix, deliberate flaws and media files."""

from __future__ import annotations

import colorsys
import inspect
import io
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image, ImageFile

from biovita_data.curate.split import split
from biovita_data.sample.audio import decode_info
from biovita_data.sample.gbif import archive_recordings
from biovita_data.sample.taxonomy import RANK_LEVEL
from biovita_data.sample.world import World, is_allowed, license_code

# Ranks above family keep their real iNaturalist ids.
REAL_INAT_IDS = {
    "Life": 48460,
    "Animalia": 1,
    "Chordata": 2,
    "Aves": 3,
    "Amphibia": 20978,
    "Mammalia": 40151,
    "Arthropoda": 47120,
    "Insecta": 47158,
}
CLASSES = ("Aves", "Amphibia", "Mammalia", "Insecta")
VARIANTS = ("old_genus", "subspecies", "case_space", "spelling")
PIL_FORMAT = {"jpg": "JPEG", "png": "PNG"}
PIL_DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def _flawed(world: World, flaw: str):
    """The one recording or photo of the world with this flaw."""
    hits = [r for r in world.recordings if r.flaw == flaw]
    hits += [p for p in world.photos if p.flaw == flaw]
    assert len(hits) == 1, (flaw, hits)
    return hits[0]


def _samples(data: bytes) -> np.ndarray:
    """All decoded samples, float (frames, channels): soundfile, else PyAV (AAC in MP4)."""
    try:
        samples, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return samples
    except sf.LibsndfileError:
        pass
    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_ndarray() for f in container.decode(audio=0)]
    return np.concatenate(frames, axis=1).T if frames else np.zeros((0, 1), np.float32)


def _duration(rec) -> float:
    return rec.duration_s


def _pixels(photo) -> int:
    return photo.width * photo.height


def _render_all(render, records, cost) -> list[bytes]:
    """render(record) for every record, two at a time, costliest first (encoders drop the GIL)."""
    order = sorted(range(len(records)), key=lambda i: -cost(records[i]))
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(order, pool.map(lambda i: render(records[i]), order), strict=True))
    return [done[i] for i in range(len(records))]


def _decodes_to_audio(data: bytes) -> bool:
    """Whether soundfile or PyAV gets any samples out of the bytes."""
    try:
        return len(_samples(data)) > 0
    except (av.FFmpegError, IndexError):
        return False


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_same_records_and_bytes(tiny_world: World) -> None:
    again = World("tiny", 0)
    assert again.taxonomy.taxa == tiny_world.taxonomy.taxa
    assert again.species == tiny_world.species
    assert [s.traits for s in again.species] == [s.traits for s in tiny_world.species]
    assert again.recordings == tiny_world.recordings
    assert again.photos == tiny_world.photos
    assert again.observations == tiny_world.observations
    assert again.expected() == tiny_world.expected()
    # Media: the shortest recording of each format and one photo of each format and flaw.
    shortest = {}
    for r in sorted(tiny_world.recordings, key=lambda r: r.duration_s, reverse=True):
        shortest[r.fmt] = r
    assert set(shortest) == {"mp3", "wav", "flac", "ogg", "m4a"}
    for r in shortest.values():
        assert again.audio_bytes(r.source, r.id) == tiny_world.audio_bytes(r.source, r.id)
    photos = {(p.fmt, p.flaw): p for p in sorted(tiny_world.photos, key=lambda p: -p.width)}
    assert len(photos) == 4  # jpg, png, truncated, bomb
    for p in photos.values():
        assert again.photo_bytes(p.id) == tiny_world.photo_bytes(p.id)
        assert again.photo_bytes(p.id, "small") == tiny_world.photo_bytes(p.id, "small")


def test_other_seed_gives_other_world(tiny_world: World) -> None:
    other = World("tiny", 1)
    assert {s.name for s in other.species}.isdisjoint({s.name for s in tiny_world.species})
    assert {r.id for r in other.recordings} != {r.id for r in tiny_world.recordings}
    assert [o.uuid for o in other.observations] != [o.uuid for o in tiny_world.observations]


def test_unknown_size_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown world size"):
        World("huge")


# ----------------------------------------------------------------------------- taxonomy
def test_default_world_is_big_enough(default_world: World) -> None:
    ranks = Counter(t.rank for t in default_world.taxonomy.taxa.values())
    assert {s.class_name for s in default_world.species} == set(CLASSES)
    assert ranks["class"] == 4
    assert ranks["family"] >= 12
    assert ranks["genus"] >= 30
    assert ranks["species"] == len(default_world.species) >= 120
    assert len({s.family for s in default_world.species}) == ranks["family"]
    assert len({s.genus for s in default_world.species}) == ranks["genus"]
    assert len({s.name for s in default_world.species}) == len(default_world.species)


@pytest.mark.parametrize("size", ["tiny", "default"])
def test_ranks_above_family_carry_real_inat_ids(size: str) -> None:
    world = World(size)
    taxa = world.taxonomy.taxa
    for name, tid in REAL_INAT_IDS.items():
        assert taxa[tid].name == name
    for sp in world.species:
        lineage = [*taxa[sp.taxon_id].ancestor_ids, sp.taxon_id]
        cls_id = REAL_INAT_IDS[sp.class_name]
        phylum = "Arthropoda" if sp.class_name == "Insecta" else "Chordata"
        assert lineage[:2] == [48460, 1]
        assert REAL_INAT_IDS[phylum] in lineage and cls_id in lineage
        below_class = [sp.order_taxon_id, sp.family_taxon_id, sp.genus_taxon_id, sp.taxon_id]
        assert lineage[-4:] == below_class
        assert [taxa[i].rank for i in lineage[-4:]] == ["order", "family", "genus", "species"]
        assert taxa[lineage[-5]].id == cls_id
    # every taxon hangs under its parent, ranks strictly descending
    for t in taxa.values():
        if t.parent_id is None:
            assert t.id == 48460 and t.ancestor_ids == ()
            continue
        parent = taxa[t.parent_id]
        assert t.ancestor_ids == (*parent.ancestor_ids, parent.id)
        assert RANK_LEVEL[parent.rank] > RANK_LEVEL[t.rank]
    generated = {t.id for t in taxa.values() if RANK_LEVEL[t.rank] <= RANK_LEVEL["order"]}
    assert generated.isdisjoint(REAL_INAT_IDS.values())


def test_audio_source_names_differ_for_about_a_tenth(default_world: World) -> None:
    voiced = [s for s in default_world.species if s.xc_group]
    variants = Counter(s.name_variant for s in voiced)
    share = 1 - variants["none"] / len(voiced)
    assert 0.05 <= share <= 0.20, variants
    assert set(variants) == {"none", *VARIANTS}
    assert {s.name_variant for s in default_world.species if not s.xc_group} <= {"none"}


@pytest.mark.parametrize("size", ["tiny", "default"])
def test_name_variants_change_the_audio_name(size: str) -> None:
    world = World(size)
    seen = set()
    for s in world.species:
        seen.add(s.name_variant)
        if s.name_variant == "none":
            assert s.audio_name == s.name
            continue
        assert s.audio_name != s.name
        if s.name_variant == "old_genus":
            assert s.xc_gen != s.genus and s.xc_sp == s.epithet
            assert world.taxonomy.synonyms[f"{s.xc_gen} {s.epithet}"] == s.taxon_id
        elif s.name_variant == "subspecies":
            assert s.audio_name.startswith(s.name + " ") and s.xc_ssp
        elif s.name_variant == "case_space":
            assert s.audio_name != s.name and " ".join(s.audio_name.split()).lower() == (
                s.name.lower()
            )
        else:
            assert s.xc_gen == s.genus and s.xc_sp != s.epithet
    assert seen >= set(VARIANTS)


# ----------------------------------------------------------------------------- records
def test_some_species_exist_in_only_one_source(default_world: World) -> None:
    w = default_world
    xc = Counter(r.species_index for r in w.recordings if r.source == "xeno-canto")
    inat = Counter(o.species_index for o in w.observations)
    xc_only = [s for s in w.species if xc[s.index] and not inat[s.index]]
    inat_only = [s for s in w.species if s.xc_group and inat[s.index] and not xc[s.index]]
    not_on_xc = [s for s in w.species if not s.xc_group]
    assert xc_only and inat_only and not_on_xc
    assert not any(xc[s.index] for s in not_on_xc)
    # a voiced species missing from Xeno-canto is heard on iNaturalist instead
    inat_sounds = Counter(r.species_index for r in w.recordings if r.source == "inaturalist")
    assert all(inat_sounds[s.index] for s in inat_only)
    assert len(xc_only) + len(inat_only) < len(w.species) // 10


def test_recordings_per_species_have_a_long_tail(default_world: World) -> None:
    xc = Counter(r.species_index for r in default_world.recordings if r.source == "xeno-canto")
    counts = list(xc.values())
    common = sum(4 <= c <= 15 for c in counts)
    rare = sum(1 <= c <= 2 for c in counts)
    # every species is common (4-15) or rare (1-2: about 3 in 10, the split's unseen species)
    assert common + rare == len(counts)
    assert common > 0.6 * len(counts)
    assert 0.2 * len(counts) <= rare <= 0.4 * len(counts)
    assert max(counts) <= 15
    assert {i for i, c in xc.items() if c <= 2} <= default_world.rare_species


def test_default_world_has_fifty_unseen_species_with_photos(default_world: World) -> None:
    # The split holds out every species with at most `unseen_max_audio` recordings; the unseen
    # bench needs 50+ of them with audio and photos, spread over the tree (one query <= 2 pp).
    w = default_world
    most = inspect.signature(split).parameters["unseen_max_audio"].default
    kept: dict[str, Counter] = {"audio": Counter(), "image": Counter()}
    for e in w.expected():
        if e.fetch == "keep":
            kept[e.modality][e.species_index] += 1
    # every audio record any source serves, kept or not: an upper bound on a species' n_audio
    heard = Counter(r.species_index for r in w.recordings if r.source == "xeno-canto")
    heard.update(e.species_index for e in w.expected() if e.source == "inaturalist"
                 and e.modality == "audio")  # fmt: skip
    heard.update(r.species_index for r in archive_recordings(w))
    unseen = [
        s for s in w.species
        if kept["audio"][s.index] and kept["image"][s.index] and heard[s.index] <= most
    ]  # fmt: skip
    assert len(unseen) >= 50
    assert {s.class_name for s in unseen} == set(CLASSES)
    assert len({s.family for s in unseen}) >= 10 and len({s.genus for s in unseen}) >= 25
    # the seen part keeps its size: 120+ species with at least 3 kept recordings and a photo
    seen = [s for s in w.species if kept["audio"][s.index] > most and kept["image"][s.index]]
    assert len(seen) >= 120


def test_congeneric_species_share_a_palette_and_differ_in_markings(default_world: World) -> None:
    # An unseen species' photo must look like its genus (as in nature): the markings are a dark
    # shade or pale tint of the genus' hue, and congeneric species differ in pattern and shade.
    def hsv(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
        return colorsys.rgb_to_hsv(*(c / 255 for c in rgb))

    by_genus: dict[str, list] = {}
    for s in default_world.species:
        by_genus.setdefault(s.genus, []).append(s)
        (h_base, _, v_base), (h_acc, s_acc, v_acc) = hsv(s.look.base_rgb), hsv(s.look.accent_rgb)
        assert min(abs(h_acc - h_base), 1 - abs(h_acc - h_base)) < 0.08, s.name
        # visible markings: darker than the body, or much paler (less saturated)
        assert v_acc < v_base - 0.2 or s_acc < 0.3, s.name
    for members in by_genus.values():
        looks = [(s.look.pattern, s.look.accent_rgb) for s in members]
        assert len({p for p, _ in looks}) == len(looks)  # one pattern per species of a genus
        assert (
            len({s.look.base_rgb for s in members}) == 1
            and len({s.look.shape for s in members}) == 1
        )


def test_licence_mix_includes_nd_and_all_rights_reserved(default_world: World) -> None:
    w = default_world
    xc = Counter(license_code(r.license) for r in w.recordings if r.source == "xeno-canto")
    photos = Counter(license_code(p.license) for p in w.photos)
    assert any("-nd-" in c for c in xc) and any("-nd-" not in c for c in xc)
    assert photos["all-rights-reserved"] > 0.05 * len(w.photos)
    assert photos["cc-by-nd"] and photos["cc-by-nc-nd"] and photos["cc0-1.0"]
    sounds = Counter(r.license for r in w.recordings if r.source == "inaturalist")
    assert None in sounds and len(sounds) >= 3
    # the licence rule: CC0 and CC BY(-SA/-NC) variants are allowed; ND and null are not
    assert is_allowed("//creativecommons.org/licenses/by-nc-sa/4.0/")
    assert is_allowed("//creativecommons.org/publicdomain/zero/1.0/")
    assert is_allowed("cc0") and is_allowed("cc-by") and is_allowed("cc-by-nc-sa")
    assert not is_allowed("//creativecommons.org/licenses/by-nc-nd/2.5/")
    assert not is_allowed("cc-by-nd") and not is_allowed("cc-by-nc-nd") and not is_allowed(None)


@pytest.mark.parametrize("size", ["tiny", "default"])
def test_deliberate_flaws_exist_and_expected_reports_them(size: str) -> None:
    w = World(size)
    corrupt, silent, dup = (_flawed(w, f) for f in ("corrupt", "silent", "duplicate"))
    truncated, bomb = _flawed(w, "truncated"), _flawed(w, "bomb")
    original = w.recording_by_id[("xeno-canto", dup.duplicate_of)]
    assert original.id < dup.id and original.flaw is None
    # the duplicate's metadata describes its bytes, which are the original's
    for attr in ("fmt", "sample_rate", "channels", "duration_s"):
        assert getattr(dup, attr) == getattr(original, attr)
    assert bomb.fmt == "png"
    expected = {(e.source, e.modality, e.record_id): e for e in w.expected()}
    media = {k: e.media for k, e in expected.items() if e.media != "keep"}
    assert media == {
        ("xeno-canto", "audio", corrupt.id): "undecodable",
        ("xeno-canto", "audio", silent.id): "silent",
        ("xeno-canto", "audio", dup.id): "duplicate",
        ("inaturalist", "image", truncated.id): "undecodable",
        ("inaturalist", "image", bomb.id): "decompression_bomb",
    }
    # fetch: restricted species on Xeno-canto, licence otherwise
    restricted = {r.id for r in w.recordings if r.restricted}
    assert restricted and all(
        w.recording_by_id[("xeno-canto", i)].species_index == w.restricted_species
        for i in restricted
    )
    for (source, modality, rid), e in expected.items():
        if source == "xeno-canto" and rid in restricted:
            assert e.fetch == "restricted"
            continue
        rec = w.recording_by_id[(source, rid)] if modality == "audio" else w.photo_by_id[rid]
        assert e.fetch == ("keep" if is_allowed(rec.license) else "license_not_allowed")
        sp = w.species[e.species_index]
        assert e.raw_name == (sp.audio_name if source == "xeno-canto" else sp.name)
    # only research-grade observations count; every XC recording does
    research = {o.id for o in w.observations if o.quality_grade == "research"}
    assert len(research) < len(w.observations)
    n_photos = sum(p.observation_id in research for p in w.photos)
    n_sounds = sum(r.source == "xeno-canto" or r.observation_id in research for r in w.recordings)
    assert len(expected) == n_photos + n_sounds
    birds = w.expected(("Aves",))
    assert birds and all(w.species[e.species_index].class_name == "Aves" for e in birds)
    assert len(birds) < len(expected)


# ----------------------------------------------------------------------------- media
def test_every_audio_file_decodes_as_advertised(tiny_world: World) -> None:
    seen_formats = Counter()
    recs = [r for r in tiny_world.recordings if r.flaw != "corrupt"]
    blobs = _render_all(lambda r: tiny_world.audio_bytes(r.source, r.id), recs, _duration)
    for r, data in zip(recs, blobs, strict=True):
        info = decode_info(data)
        assert info["format"] == r.fmt, r
        assert info["sample_rate"] == r.sample_rate, r
        assert info["channels"] == r.channels, r
        assert info["duration_s"] == pytest.approx(r.duration_s, abs=0.15), r
        seen_formats[r.fmt] += 1
    assert set(seen_formats) == {"mp3", "wav", "flac", "ogg", "m4a"}
    assert sum(seen_formats.values()) == len(tiny_world.recordings) - 1


def test_corrupt_audio_does_not_decode(tiny_world: World) -> None:
    r = _flawed(tiny_world, "corrupt")
    data = tiny_world.audio_bytes(r.source, r.id)
    assert len(data) > 1000
    assert not _decodes_to_audio(data)
    with pytest.raises((sf.LibsndfileError, av.FFmpegError)):
        decode_info(data)


@pytest.mark.parametrize(
    ("size", "seed", "fmt"),
    [("tiny", 2, "flac"), ("tiny", 6, "ogg"), ("default", 0, "wav")],
)
def test_corrupt_audio_does_not_decode_in_other_formats(size: str, seed: int, fmt: str) -> None:
    # A WAV that keeps its whole header would still decode (its data is just PCM noise).
    world = World(size, seed)
    r = _flawed(world, "corrupt")
    assert r.fmt == fmt, f"world generation changed: find a seed whose corrupt file is {fmt}"
    assert not _decodes_to_audio(world.audio_bytes(r.source, r.id))


def test_silent_audio_is_silent(tiny_world: World) -> None:
    r = _flawed(tiny_world, "silent")
    samples = _samples(tiny_world.audio_bytes(r.source, r.id))
    assert samples.shape == (round(r.duration_s * r.sample_rate), r.channels)
    assert float(np.sqrt(np.mean(samples**2))) < 1e-4
    assert float(np.abs(samples).max()) < 1e-3
    # an ordinary recording of the same format is far from silent
    normal = next(x for x in tiny_world.recordings if x.fmt == r.fmt and x.flaw is None)
    loud = _samples(tiny_world.audio_bytes(normal.source, normal.id))
    assert float(np.sqrt(np.mean(loud**2))) > 1e-2


def test_duplicate_audio_equals_its_original(tiny_world: World) -> None:
    dup = _flawed(tiny_world, "duplicate")
    data = tiny_world.audio_bytes("xeno-canto", dup.id)
    assert data == tiny_world.audio_bytes("xeno-canto", dup.duplicate_of)
    others = [r for r in tiny_world.recordings if r.flaw is None and r.fmt == dup.fmt][:3]
    assert all(tiny_world.audio_bytes(r.source, r.id) != data for r in others)


def test_every_photo_opens_as_advertised(tiny_world: World, monkeypatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PIL_DEFAULT_MAX_PIXELS)
    opened = 0
    photos = tiny_world.photos
    blobs = _render_all(lambda p: tiny_world.photo_bytes(p.id), photos, _pixels)
    for p, data in zip(photos, blobs, strict=True):
        if p.flaw == "bomb":
            with pytest.raises(Image.DecompressionBombError):
                Image.open(io.BytesIO(data))
            continue
        with Image.open(io.BytesIO(data)) as im:
            assert (im.format, im.size) == (PIL_FORMAT[p.fmt], (p.width, p.height)), p
            if p.flaw == "truncated":
                with pytest.raises(OSError):
                    im.load()
                continue
            im.load()
            assert im.mode == "RGB"
        opened += 1
    assert opened == len(tiny_world.photos) - 2
