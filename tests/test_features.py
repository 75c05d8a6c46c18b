"Feature cache: atomic, resumable, settings-keyed extraction; the extract-features command."
import h5py
import numpy as np
import pytest
import soundfile as sf
import torch

from aacnb.audio import AudioError, LogMelConfig, frames_for
from aacnb.features import (CacheError, FeatureCache, audio_items, cli_extract_features, extract_features,
                            log_mel_fn, log_mel_settings, partial_path)


def _clips(d, n=10, sr=32000):
    "n short noisy clips of different lengths (some at another rate); ids with awkward characters."
    items = []
    for k in range(n):
        rate = sr if k % 3 else 44100
        x = np.random.default_rng(k).uniform(-0.3, 0.3, int(rate * (0.4 + 0.05 * k))).astype(np.float32)
        p = d / f"clip {k}.wav"
        sf.write(p, x, rate)
        items.append((f"dir/clip {k}.wav" if k == 3 else f"clip {k}.wav", p))
    return items


def _snapshot(cache):
    return {k: cache[k] for k in cache.keys()}


def test_interrupted_extraction_resumes_and_equals_uninterrupted(tmp_path):
    items = _clips(tmp_path)
    ref = _snapshot(extract_features(items, log_mel_fn(), tmp_path / "ref.h5", log_mel_settings(), batch_size=3,
                                     progress=False))
    calls, seen = {"n": 0}, []

    def dies_after_two_batches(w, n):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of a run
        return log_mel_fn()(w, n)

    out = tmp_path / "feats.h5"
    with pytest.raises(KeyboardInterrupt):
        extract_features(items, dies_after_two_batches, out, log_mel_settings(), batch_size=3, progress=False)
    assert not out.exists() and partial_path(out).exists()
    with h5py.File(partial_path(out), "r") as f:
        assert len(f["features"]) == 6 and not f.attrs["complete"]
    with pytest.raises(CacheError, match="partial"):
        FeatureCache(out)
    with pytest.raises(CacheError, match="partial"):
        FeatureCache(partial_path(out))

    def counting(w, n):
        seen.extend(int(x) for x in n)
        return log_mel_fn()(w, n)

    cache = extract_features(items, counting, out, log_mel_settings(), batch_size=3, progress=False)
    assert len(seen) == 4, "only the 4 clips missing from the partial are extracted again"
    assert not partial_path(out).exists()
    got = _snapshot(cache)
    assert sorted(got) == sorted(ref) == sorted(i for i, _ in items)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    assert got["dir/clip 3.wav"].shape == (frames_for(int(32000 * 0.55)), 64)
    # a finished cache is reused without calling fn
    again = extract_features(items, lambda w, n: 1 / 0, out, log_mel_settings(), progress=False)
    assert len(again) == 10


def test_partial_renamed_by_hand_is_not_complete(tmp_path):
    items = _clips(tmp_path, n=4)
    out = tmp_path / "f.h5"
    with pytest.raises(RuntimeError):
        extract_features(items, lambda w, n: (_ for _ in ()).throw(RuntimeError("boom")), out, {"a": 1},
                         batch_size=2, progress=False)
    partial_path(out).rename(out)  # someone "finishes" it with mv
    with pytest.raises(CacheError, match="not marked complete"):
        FeatureCache(out)


def test_settings_mismatch_names_both(tmp_path):
    items = _clips(tmp_path, n=3)
    out = tmp_path / "f.h5"
    extract_features(items, log_mel_fn(), out, log_mel_settings(), progress=False)
    other = log_mel_settings(LogMelConfig(n_mels=32))
    with pytest.raises(CacheError) as e:
        extract_features(items, log_mel_fn(LogMelConfig(n_mels=32)), out, other, progress=False)
    msg = str(e.value)
    assert '"n_mels":64' in msg and '"n_mels":32' in msg and "n_mels" in msg.split("differing keys")[1]
    with pytest.raises(CacheError, match="load_max_seconds"):  # the loader's crop is part of the key
        extract_features(items, log_mel_fn(), out, log_mel_settings(), max_seconds=0.3, progress=False)
    # same for an unfinished cache
    out2 = tmp_path / "g.h5"
    with pytest.raises(ZeroDivisionError):
        extract_features(items, lambda w, n: 1 / 0, out2, {"enc": "a"}, progress=False)
    with pytest.raises(CacheError, match='"enc":"a".*"enc":"b"'):
        extract_features(items, log_mel_fn(), out2, {"enc": "b"}, progress=False)


def test_growing_a_finished_cache_extracts_only_new_items(tmp_path):
    items = _clips(tmp_path, n=6)
    out = tmp_path / "f.h5"
    extract_features(items[:4], log_mel_fn(), out, log_mel_settings(), progress=False)
    seen = []
    cache = extract_features(items, lambda w, n: seen.extend(n.tolist()) or log_mel_fn()(w, n), out,
                             log_mel_settings(), progress=False)
    assert len(seen) == 2 and len(cache) == 6 and not partial_path(out).exists()


def test_vectors_ids_and_errors(tmp_path):
    items = _clips(tmp_path, n=4)
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not really")
    bad = items + [("broken.wav", tmp_path / "broken.wav")]
    clipvec = lambda w, n: [torch.full((8,), float(x)) for x in n]  # (D,) clip embeddings, torch tensors
    with pytest.raises(AudioError, match="broken.wav"):
        extract_features(bad, clipvec, tmp_path / "v.h5", {"enc": "x"}, progress=False)
    cache = extract_features(bad, clipvec, tmp_path / "v.h5", {"enc": "x"}, progress=False, on_error="skip")
    assert len(cache) == 4 and "broken.wav" in cache.failed and "broken.wav" not in cache
    assert cache["dir/clip 3.wav"].shape == (8,) and cache["dir/clip 3.wav"].dtype == np.float32
    with pytest.raises(KeyError, match="nope"):
        cache["nope"]
    with pytest.raises(ValueError, match="two files"):
        extract_features(items + [("clip 0.wav", tmp_path / "other.wav")], clipvec, tmp_path / "w.h5", {},
                         progress=False)
    with pytest.raises(ValueError, match="returned 1 arrays"):
        extract_features(items, lambda w, n: [np.zeros(3)], tmp_path / "w.h5", {}, batch_size=2, progress=False)
    with pytest.raises(CacheError, match="no feature cache"):
        FeatureCache(tmp_path / "absent.h5")


def test_cache_pickles_for_dataloader_workers(tmp_path):
    import pickle
    items = _clips(tmp_path, n=2)
    cache = extract_features(items, log_mel_fn(), tmp_path / "f.h5", log_mel_settings(), progress=False)
    a = cache["clip 0.wav"]
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone["clip 0.wav"], a)


def test_cli_folder_and_clotho_layout(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "a.wav", np.zeros(16000, np.float32), 16000)
    sf.write(folder / "sub" / "b.flac", np.full(48000, 0.1, np.float32), 48000)
    (folder / "notes.txt").write_text("not audio")
    (folder / "sub" / "c.ogg").write_bytes(b"")  # empty: skipped, reported
    assert [i for i, _ in audio_items(folder)] == ["a.wav", "sub/b.flac", "sub/c.ogg"]
    assert cli_extract_features([str(folder), "--no-progress"]) == 0  # default output under the data root
    assert "1 unreadable" in capsys.readouterr().out
    from aacnb.core import data_root
    cache = FeatureCache(data_root() / "features" / "mine_logmel.h5")
    assert sorted(cache.keys()) == ["a.wav", "sub/b.flac"] and cache["sub/b.flac"].shape == (101, 64)

    root = tmp_path / "clotho"
    for split in ("development", "validation", "evaluation"):
        d = root / "CLOTHO_v2.1" / "clotho_audio_files" / split
        d.mkdir(parents=True)
        sf.write(d / f"{split} clip.wav", np.zeros(44100, np.float32), 44100)
    out = tmp_path / "clotho.h5"
    assert cli_extract_features([str(root), "-o", str(out), "--split", "evaluation", "--no-progress"]) == 0
    assert FeatureCache(out).keys() == ["evaluation clip.wav"]
    assert cli_extract_features([str(tmp_path / "nowhere"), "--no-progress"]) == 2
