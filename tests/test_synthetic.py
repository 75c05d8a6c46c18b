"Tests of the embedded sound-scene corpus (aacnb.sounds, .scenes, .scene_captions, .synthetic): determinism, formats, caption truth, audio truth."
import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from aacnb import scene_captions, scenes, sounds
from aacnb import synthetic as S

SMALL = dict(n_clips=9, n_audiocaps=6, n_macs=3, clip_seconds=(3.0, 4.0), progress=False, num_workers=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return S.make_corpus(tmp_path_factory.mktemp("corpus"), seed=0, **SMALL)


def _digest(root: Path) -> dict:
    skip = {S.MARKER, S.OWNER_FILE}  # the marker carries timing and provenance
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip
            and not p.name.startswith("resplit_")}  # aacnb.datasets' manifest, written by a reader


def _words(caption: str) -> str:
    return " " + re.sub(r"[^a-z' ]", " ", caption.lower()) + " "


# ---------------------------------------------------------------- determinism

def test_clip_is_a_pure_function_of_its_key():
    a, s = S.make_clip(0, "clotho", "development", 5, clip_seconds=(3.0, 4.0))
    b, t = S.make_clip(0, "clotho", "development", 5, clip_seconds=(3.0, 4.0))
    assert np.array_equal(a, b) and s == t
    c, u = S.make_clip(1, "clotho", "development", 5, clip_seconds=(3.0, 4.0))
    assert u["captions"] != s["captions"] and (len(a) != len(c) or not np.array_equal(a, c))


def test_same_seed_same_bytes_other_seed_differs(corpus, tmp_path):
    again = S.make_corpus(tmp_path / "again", seed=0, **SMALL)
    assert _digest(again) == _digest(corpus)
    other = S.make_corpus(tmp_path / "other", seed=1, **SMALL)
    d0, d1 = _digest(corpus), _digest(other)
    cap = "CLOTHO_v2.1/clotho_csv_files/clotho_captions_development.csv"
    assert d0[cap] != d1[cap]
    assert sum(d0[k] == d1.get(k) for k in d0 if k.endswith(".wav")) == 0


def test_workers_do_not_change_the_output(corpus, tmp_path):
    par = S.make_corpus(tmp_path / "par", seed=0, **{**SMALL, "num_workers": 2})
    assert _digest(par) == _digest(corpus)


# ---------------------------------------------------------------- formats

def test_clotho_layout_plain_readers(corpus):
    c = corpus / "CLOTHO_v2.1"
    sizes = S.split_sizes(SMALL["n_clips"], S.CLOTHO_PROPORTIONS)
    for split, k in sizes.items():
        with open(c / "clotho_csv_files" / f"clotho_captions_{split}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
        assert len(rows) == k
        for r in rows:
            caps = [r[f"caption_{i}"] for i in range(1, 6)]
            assert len(set(caps)) == 5 and all(caps)
            x, sr = sf.read(c / "clotho_audio_files" / split / r["file_name"])
            info = sf.info(c / "clotho_audio_files" / split / r["file_name"])
            assert sr == 32000 and x.ndim == 1 and info.subtype == "PCM_16"
            assert 3.0 <= len(x) / sr <= 4.0 + 1e-3
        with open(c / "clotho_csv_files" / f"clotho_metadata_{split}.csv", newline="", encoding="utf-8") as f:
            meta = list(csv.DictReader(f))
        assert list(meta[0]) == ["file_name", "keywords", "sound_id", "sound_link", "start_end_samples",
                                 "manufacturer", "license"]
        assert [m["file_name"] for m in meta] == [r["file_name"] for r in rows]


def test_audiocaps_layout_plain_readers(corpus):
    a = corpus / "AUDIOCAPS"
    sizes = S.split_sizes(SMALL["n_audiocaps"], S.AUDIOCAPS_PROPORTIONS)
    all_ids, cap_ids = set(), set()
    for split, k in sizes.items():
        with open(a / "csv_files" / f"{split}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["audiocap_id", "youtube_id", "start_time", "caption"]
        ids = [r["youtube_id"] for r in rows]
        per = {i: ids.count(i) for i in ids}
        assert len(per) == k and set(per.values()) == ({1} if split == "train" else {5})
        for yid in per:
            assert len(yid) == 11 and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{10}", yid)
            assert sf.info(a / "audio" / split / f"{yid}.wav").samplerate == 32000
        assert not all_ids & set(per)
        all_ids |= set(per)
        cap_ids |= {r["audiocap_id"] for r in rows}
        assert all(r["start_time"].isdigit() for r in rows)
    assert len(cap_ids) == sum(1 if s == "train" else 5 for s, k in sizes.items() for _ in range(k))


def test_macs_layout_plain_readers(corpus):
    m = corpus / "MACS"
    doc = yaml.safe_load((m / "MACS.yaml").read_text())
    assert len(doc["files"]) == SMALL["n_macs"]
    for item in doc["files"]:
        assert re.fullmatch(r"(park|street_traffic|public_square)-[a-z]+-\d+-\d+-a\.wav", item["filename"])
        assert (m / "audio" / item["filename"]).is_file()
        anns = item["annotations"]
        assert 3 <= len(anns) <= 5 and len({a["sentence"] for a in anns}) == len(anns)
        assert len({a["annotator_id"] for a in anns}) == len(anns)
        assert all(isinstance(a["tags"], list) and a["tags"] for a in anns)


def test_aacnb_dataset_readers(corpus):
    datasets = pytest.importorskip("aacnb.datasets")
    sizes = S.split_sizes(SMALL["n_clips"], S.CLOTHO_PROPORTIONS)
    for split, k in sizes.items():
        recs = datasets.read_clotho(corpus, split)
        assert len(recs) == k and all(len(r.captions) == 5 and r.audio_path.is_file() for r in recs)
    ac = datasets.read_audiocaps(corpus, "val")
    assert ac and all(len(r.captions) == 5 for r in ac)
    assert len(datasets.read_audiocaps(corpus, "train")[0].captions) == 1
    assert len(datasets.read_macs(corpus)) == SMALL["n_macs"]
    sp = datasets.clotho_splits(corpus, seed=0)
    assert sum(len(v) for v in sp.values()) == SMALL["n_clips"]


# ---------------------------------------------------------------- captions are true of the scene

THEN_RE = r" (then|followed|after|before|first|afterwards|later) "
SAME_TIME_RE = r" (simultaneously|meanwhile|same time) "
FAR_RE = r" (distance|far|distant|faraway) "
NEAR_RE = r" (nearby|close) "
LOUD_RE = r" (loud|loudly|heavy|heavily|strong|strongly|pours|pouring) | hard (?!floor)"
QUIET_RE = r" (quiet|quietly|soft|softly|faint|faintly|light|lightly|gentle|gently|low|drizzles|drizzling) "
BG_RE = r" (background|amid|steady|steadily|constant|continuous) "


def _scenes(n=400):
    for i in range(n):
        ss = np.random.SeedSequence([7, i])
        r1, r2 = (np.random.default_rng(s) for s in ss.spawn(2))
        sc = scenes.sample_scene(r1, float(r1.uniform(5, 8)), kinds=sounds.URBAN if i % 4 == 0 else None,
                            p_background=0.9 if i % 4 == 0 else 0.5)
        yield sc, scene_captions.caption_scene(sc, r2)


def test_captions_name_every_event_and_only_what_is_there():
    vocab = set()
    for sc, caps in _scenes():
        evs = sc["events"]
        fg = [e for e in evs if e["role"] == "fg"]
        has = lambda key, vals: any(e.get(key) in vals for e in evs)  # noqa: E731
        counts = {e.get("count") for e in evs if e.get("count")}
        assert len(caps) == 5 and len({_words(c) for c in caps}) == 5
        for c in caps:
            w = _words(c)
            vocab |= set(w.split())
            for e in evs:
                assert scene_captions.mentions(c, e["type"]), (c, e["type"])
            if sc["relation"] != "then":
                assert not re.search(THEN_RE, w), (c, sc)
            if sc["relation"] != "while":
                assert not re.search(SAME_TIME_RE, w), (c, sc)
            if not has("distance", {"far"}):
                assert not re.search(FAR_RE, w), (c, sc)
            if not has("distance", {"near"}):
                assert not re.search(NEAR_RE, w), (c, sc)
            if not has("level", {"loud"}):
                assert not re.search(LOUD_RE, w), (c, sc)
            if not has("level", {"quiet"}):
                assert not re.search(QUIET_RE, w), (c, sc)
            if not any(e["role"] == "bg" for e in evs):
                assert not re.search(BG_RE, w), (c, sc)
            if 2 not in counts:
                assert " twice " not in w and " two times " not in w, (c, sc)
            if 1 not in counts:
                assert " once " not in w and " single time " not in w, (c, sc)
            if not any(k >= 3 for k in counts):
                assert not re.search(r" (repeatedly|several times|multiple times|over and over|again and again|"
                                     r"three times|series of) ", w), (c, sc)
            if len(fg) == 2 and sc["relation"] == "then":
                assert re.search(THEN_RE, w), c   # the order is always said
    assert 200 <= len(vocab) <= 800, len(vocab)


# ---------------------------------------------------------------- the audio carries what the captions say

def _scene(*events, relation=None, duration=6.0):
    return {"duration": duration, "relation": relation, "events": [dict(e) for e in events]}


def _ev(kind, **kw):
    base = {"type": kind, "role": "fg", "level": "normal", "distance": "neutral", "plural": False, "voice": None,
            "start": 0.5, "end": 5.5}
    if kind in sounds.DISCRETE:
        base.update(count=3, interval=0.5, unit=0.3)
    base.update(kw)
    base["gain_db"] = scenes.LEVEL_DB[base["level"]] + scenes.DISTANCE_DB[base["distance"]]
    return base


def _centroid(x, sr=32000):
    spec = np.abs(np.fft.rfft(x))
    f = np.fft.rfftfreq(len(x), 1 / sr)
    return float((spec * f).sum() / spec.sum())


def test_audio_levels_distance_order():
    rng = np.random.default_rng
    loud = scenes.render_scene(_scene(_ev("siren", level="loud")), rng(0))
    quiet = scenes.render_scene(_scene(_ev("siren", level="quiet")), rng(0))
    db = 20 * np.log10(sounds.frame_rms_max(loud.astype(float), 32000) / sounds.frame_rms_max(quiet.astype(float), 32000))
    assert db > 12, db
    near = scenes.render_scene(_scene(_ev("rain", distance="near")), rng(1))
    far = scenes.render_scene(_scene(_ev("rain", distance="far")), rng(1))
    assert _centroid(far) < 0.6 * _centroid(near)                       # far is duller
    assert sounds.frame_rms_max(far.astype(float), 32000) < sounds.frame_rms_max(near.astype(float), 32000)
    # "then": nothing of A after its slot, nothing of B before its slot
    sc = _scene(_ev("bell", start=0.2, end=2.5, count=2, interval=0.8), _ev("dog", start=3.0, end=5.0), relation="then")
    mix, (a, b) = scenes.render_scene(sc, rng(2), return_stems=True)
    assert np.abs(a[int(2.5 * 32000) + 1:]).max() == 0 and np.abs(b[: int(3.0 * 32000)]).max() == 0
    assert np.abs(a).max() > 0.01 and np.abs(b).max() > 0.01


def test_discrete_counts_are_heard():
    "A dog that barks twice has two bursts of energy; three times, three."
    for count in (1, 2, 3):
        sc = _scene(_ev("dog", count=count, interval=0.6, distance="near", start=0.5, end=0.5 + 0.6 * count + 0.3))
        x = scenes.render_scene(sc, np.random.default_rng(count)).astype(float)
        m = 320
        env = np.sqrt((x[: len(x) // m * m].reshape(-1, m) ** 2).mean(1))
        active = env > 0.1 * env.max()
        onsets = int(np.sum(active[1:] & ~active[:-1]))
        assert onsets == count, (count, onsets)


def test_written_audio_not_silent_not_clipped(corpus):
    for p in sorted(corpus.rglob("*.wav")):
        x, _ = sf.read(p, dtype="int16")
        peak = np.abs(x.astype(np.int32)).max()
        assert 300 < peak < 32000, (p, peak)          # clearly audible, never at full scale
        assert np.mean(np.abs(x) >= 32767) == 0


def test_ground_truth_matches_files(corpus):
    truth = S.load_scenes(corpus)
    for split, clips in truth["clotho"].items():
        with open(corpus / f"CLOTHO_v2.1/clotho_csv_files/clotho_captions_{split}.csv", encoding="utf-8") as f:
            rows = {r["file_name"]: [r[f"caption_{i}"] for i in range(1, 6)] for r in csv.DictReader(f)}
        assert set(rows) == set(clips)
        for name, sc in clips.items():
            assert rows[name] == sc["captions"] and (corpus / sc["file"]).is_file()
            assert abs(sf.info(corpus / sc["file"]).duration - sc["duration"]) < 1e-3
    assert set(truth["audiocaps"]) == {"train", "val", "test"} and len(truth["macs"]["all"]) == SMALL["n_macs"]


# ---------------------------------------------------------------- skip-if-complete, force, safety, CLI

def test_skip_when_complete_and_force(corpus):
    marker = corpus / S.MARKER
    before = marker.read_bytes()
    assert S.make_corpus(corpus, seed=0, **SMALL) == corpus
    assert marker.read_bytes() == before                       # nothing regenerated
    digest = _digest(corpus)
    S.make_corpus(corpus, seed=0, force=True, **SMALL)
    assert marker.read_bytes() != before and _digest(corpus) == digest
    assert S.is_complete(corpus, S.corpus_params(9, 0, (3.0, 4.0), 32000, 6, 3))
    assert not S.is_complete(corpus, S.corpus_params(10, 0, (3.0, 4.0), 32000, 6, 3))


def test_incomplete_or_changed_corpus_regenerates(tmp_path):
    root = S.make_corpus(tmp_path / "c", seed=0, **SMALL)
    victim = next(root.rglob("*.wav"))
    victim.unlink()
    assert not S.is_complete(root)
    S.make_corpus(root, seed=0, **SMALL)
    assert victim.is_file() and S.is_complete(root)
    S.make_corpus(root, seed=0, **{**SMALL, "n_clips": 6})
    assert len(list((root / "CLOTHO_v2.1/clotho_audio_files").rglob("*.wav"))) == 6  # no stale files left
    assert not list(root.glob(".staging-*"))


def test_refuses_foreign_data(tmp_path):
    (tmp_path / "CLOTHO_v2.1").mkdir()
    with pytest.raises(FileExistsError, match="not made by make_corpus"):
        S.make_corpus(tmp_path, **SMALL)


def test_cli(tmp_path, capsys):
    rc = S.cli_make_corpus(["--root", str(tmp_path / "cli"), "--n-clips", "3", "--n-audiocaps", "0", "--n-macs", "0",
                            "--min-seconds", "3", "--max-seconds", "3.5", "--quiet"])
    assert rc == 0 and "vocabulary" in capsys.readouterr().out
    assert (tmp_path / "cli" / "CLOTHO_v2.1/clotho_csv_files/clotho_captions_evaluation.csv").is_file()
    assert not (tmp_path / "cli" / "AUDIOCAPS").exists()


def test_default_root_is_under_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("AACNB_DATA", str(tmp_path / "d"))
    root = S.make_corpus(n_clips=3, n_audiocaps=0, n_macs=0, clip_seconds=(3.0, 3.0), progress=False, num_workers=1)
    assert root == tmp_path / "d" / "corpus" and S.is_complete(root)
