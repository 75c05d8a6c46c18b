"""Issue #19, item 6 (the file-handling parts): damaged caches, awkward file names, bad folders, audio formats.

- A finished feature cache that is cut short or overwritten is noticed where it is used (`CacheDamaged`, naming
  the file and the item), and extracting again rebuilds it (the damaged file set aside), the same as before;
  `aacnb search`'s embedding cache likewise.
- A file name that is not valid UTF-8 is searched, extracted and printed (with \\xNN escapes), not an abort.
- A folder in which no file can be read is an error saying so, not "need at least one array to stack".
- A directory given where a file is expected is called a directory (features, search, evaluate, caption).
- One list of audio file endings (`aacnb.audio.AUDIO_EXTENSIONS`, .mp3 included) for every folder scan.
- A WAV whose header promises more samples than it holds is read with an `AudioWarning` naming the file.
"""
import json
import logging
import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch

from aacnb.audio import AUDIO_EXTENSIONS, AudioError, AudioWarning, load_audio
from aacnb.core import save_torch
from aacnb.features import (AUDIO_SUFFIXES, CacheDamaged, FeatureCache, audio_items, cli_extract_features,
                            extract_features, log_mel_fn, log_mel_settings, partial_path)
from aacnb.search import AudioSearcher, cli_search

NOT_UTF8 = b"caf\xe9 bell.wav"  # a latin-1 file name, as old archives and some cameras write them


def _tone(path, f0=440.0, seconds=1.0, sr=32000, **kw):
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr, **kw)
    return path


def _folder(d: Path, n=4) -> list:
    d.mkdir(parents=True, exist_ok=True)
    return [(f"c{k}.wav", _tone(d / f"c{k}.wav", 200.0 * (k + 1), 0.5 + 0.25 * k)) for k in range(n)]


def _extract(items, path, **kw):
    return extract_features(items, log_mel_fn(), path, log_mel_settings(), batch_size=2, progress=False, **kw)


def _contents(cache) -> dict:
    return {i: cache[i] for i in cache.keys()}


@pytest.fixture
def logged():
    "The messages aacnb.features logs during the test (its logger prints and does not propagate)."
    from aacnb.core import get_logger
    log, said = get_logger("aacnb.features"), []
    h = logging.Handler()
    h.emit = lambda record: said.append(record.getMessage())
    log.addHandler(h)
    yield said
    log.removeHandler(h)


# -- damaged feature caches ---------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["cut short", "overwritten"])
def test_a_damaged_finished_cache_is_noticed_on_use_and_extracting_again_rebuilds_it(tmp_path, logged, damage):
    items = _folder(tmp_path / "audio")
    path = tmp_path / "f.h5"
    want = _contents(_extract(items, path))
    size = path.stat().st_size
    if damage == "cut short":
        os.truncate(path, size - 1000)
        with pytest.raises(CacheDamaged, match=f"{path} is a damaged feature cache: HDF5 cannot open it"):
            FeatureCache(path)
    else:  # bytes in the middle of an item: the file opens, the item's checksum does not match
        cache = FeatureCache(path)
        with h5py.File(path, "r") as f:
            ds = f["features"]["c3.wav"]
            offset = ds.id.get_chunk_info(0).byte_offset
        with open(path, "r+b") as f:
            f.seek(offset + 100)
            f.write(b"\x01" * 64)
        with pytest.raises(CacheDamaged, match="item 'c3.wav' cannot be read"):
            cache["c3.wav"]
        cache.close()
        with pytest.raises(CacheDamaged, match="item 'c3.wav'"):
            FeatureCache(path).verify()
    again = _extract(items, path)
    assert Path(f"{path}.damaged").exists() and any(f"moved it to {path}.damaged" in m for m in logged)
    got = _contents(again)
    assert got.keys() == want.keys() and all(np.array_equal(got[i], want[i]) for i in want)
    # and the command line does the same: rerunning `aacnb extract-features` is the fix
    os.truncate(path, path.stat().st_size // 2)
    assert cli_extract_features([str(tmp_path / "audio"), "-o", str(path), "--no-progress"]) == 0
    got = _contents(FeatureCache(path))
    assert all(np.array_equal(got[i], want[i]) for i in want)


def test_another_extractions_cache_is_still_refused_not_rebuilt(tmp_path):
    items = _folder(tmp_path / "audio", 2)
    _extract(items, tmp_path / "f.h5")
    with pytest.raises(ValueError, match="differing keys"):
        extract_features(items, log_mel_fn(), tmp_path / "f.h5", {"features": "other"}, progress=False)
    assert not Path(f"{tmp_path}/f.h5.damaged").exists() and FeatureCache(tmp_path / "f.h5").verify()


def test_a_cache_written_before_checksums_still_reads(tmp_path):
    items = _folder(tmp_path / "audio", 3)
    new = _contents(_extract(items, tmp_path / "new.h5"))
    with h5py.File(tmp_path / "new.h5", "r") as f, h5py.File(tmp_path / "old.h5", "w") as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v
        grp = g.create_group("features")
        for k in f["features"]:  # contiguous, no checksum: as extract_features wrote them before
            grp.create_dataset(k, data=f["features"][k][()])
            assert f["features"][k].fletcher32 and not grp[k].fletcher32
    old = FeatureCache(tmp_path / "old.h5").verify()
    assert all(np.array_equal(old[i], new[i]) for i in new)
    assert _extract(items, tmp_path / "old.h5").keys() == list(new)  # used as it is, not redone
    assert not Path(f"{tmp_path}/old.h5.damaged").exists()


def test_a_partial_cache_with_an_unreadable_item_is_started_afresh(tmp_path, logged):
    items = _folder(tmp_path / "audio")
    calls = []

    def dies_in_batch_2(w, n):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return log_mel_fn()(w, n)
    with pytest.raises(KeyboardInterrupt):
        extract_features(items, dies_in_batch_2, tmp_path / "f.h5", log_mel_settings(), batch_size=2, progress=False)
    part = partial_path(tmp_path / "f.h5")
    with h5py.File(part, "r") as f:
        name = next(iter(f["features"]))
        offset = f["features"][name].id.get_chunk_info(0).byte_offset
    with open(part, "r+b") as f:
        f.seek(offset + 10)
        f.write(b"\x07" * 32)
    cache = _extract(items, tmp_path / "f.h5")
    assert any(f"{part} is unreadable ({name!r}" in m and "starting it afresh" in m for m in logged), logged
    want = _contents(_extract(items, tmp_path / "g.h5"))
    assert all(np.array_equal(cache[i], want[i]) for i in want)


# -- aacnb search: its cache, file names, bad folders, formats ------------------------------------------------
@pytest.fixture
def model_ckpt(tmp_path):
    from aacnb.retrieval import build_biencoder
    torch.manual_seed(0)
    m = build_biencoder("cnn14-tiny", "bert-tiny", embed_dim=16)
    save_torch({"model": m.state_dict(), "model_config": m.model_config}, tmp_path / "best.pt")
    return tmp_path / "best.pt"


def _searcher(ckpt, cache_dir):
    return AudioSearcher.from_checkpoint(ckpt, cache_dir=cache_dir, device="cpu", batch_size=2)


def test_a_damaged_search_cache_is_rebuilt(tmp_path, model_ckpt):
    _folder(tmp_path / "sounds")
    s = _searcher(model_ckpt, tmp_path / "cache")
    s.index(tmp_path / "sounds")
    want = s.search("a low hum", top=4)
    os.truncate(s.cache_path, s.cache_path.stat().st_size - 500)
    s2 = _searcher(model_ckpt, tmp_path / "cache")
    s2.index(tmp_path / "sounds")
    assert s2.search("a low hum", top=4) == want and Path(f"{s2.cache_path}.damaged").exists()


def test_a_file_name_that_is_not_utf8_is_searched_and_printed(tmp_path, model_ckpt, capsys):
    d = tmp_path / "sounds"
    _folder(d, 2)
    bad = os.path.join(os.fsencode(d), NOT_UTF8)
    _tone(bad, 880.0)
    rc = cli_search(["--model", str(model_ckpt), "--folder", str(d), "--query", "a bell", "--top", "3",
                     "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0 and "(3 files)" in out.out and "caf\\xe9 bell.wav" in out.out, out.err
    rc = cli_search(["--model", str(model_ckpt), "--folder", str(d), "--query", "a bell", "--top", "3", "--json",
                     "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    hits = json.loads(capsys.readouterr().out)
    assert rc == 0 and os.fsencode(d / next(h["path"] for h in hits if "bell" in h["path"])) == bad  # the real name
    # and the feature extractor caches it under its own name
    items = audio_items(d)
    assert len(items) == 3 and extract_features(items, log_mel_fn(), tmp_path / "f.h5", log_mel_settings(),
                                                progress=False).keys() == [i for i, _ in items]
    assert cli_extract_features([str(d), "-o", str(tmp_path / "g.h5"), "--no-progress"]) == 0


def test_a_folder_where_no_file_can_be_read_says_so(tmp_path, model_ckpt, capsys):
    d = tmp_path / "sounds"
    d.mkdir()
    (d / "a.wav").write_bytes(b"not audio at all")
    (d / "b.flac").write_bytes(b"")
    rc = cli_search(["--model", str(model_ckpt), "--folder", str(d), "--query", "x",
                     "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and f"none of the 2 audio file(s) under {d} could be read" in err and "a.wav" in err
    assert "stack" not in err
    rc = cli_extract_features([str(d), "-o", str(tmp_path / "f.h5"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1 and f"none of the 2 audio file(s) under {d} could be read" in out and "empty" in out


def test_a_directory_where_a_file_is_expected_is_called_a_directory(tmp_path, model_ckpt, capsys):
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(AudioError, match="d.wav: is a directory, not an audio file"):
        load_audio(tmp_path / "d.wav")
    items = _folder(tmp_path / "audio", 2) + [("d.wav", tmp_path / "d.wav")]
    with pytest.raises(AudioError, match="is a directory"):
        _extract(items, tmp_path / "f.h5")
    assert "is a directory" in _extract(items, tmp_path / "g.h5", on_error="skip").failed["d.wav"]
    assert cli_extract_features([str(tmp_path / "audio"), "-o", str(tmp_path), "--no-progress"]) == 2
    assert f"the output {tmp_path} is a directory" in capsys.readouterr().out
    # search: --model a folder that is not a saved model, --folder a file
    assert cli_search(["--model", str(tmp_path), "--folder", str(tmp_path / "audio"), "--query", "x"]) == 1
    assert f"model {tmp_path} is a directory but not a saved model folder" in capsys.readouterr().err
    assert cli_search(["--model", str(model_ckpt), "--folder", str(items[0][1]), "--query", "x",
                       "--device", "cpu"]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    # caption: --model a folder that is not a saved captioner (a folder among the files:
    # tests/test_caption_cli_reliability.py)
    from aacnb.caption import cli_caption
    assert cli_caption(["--model", str(tmp_path), str(items[0][1]), "--device", "cpu"]) == 2
    assert f"captioner {tmp_path} is a directory but not a saved model folder" in capsys.readouterr().err


def test_one_list_of_audio_extensions_mp3_included(tmp_path, model_ckpt):
    assert AUDIO_SUFFIXES is AUDIO_EXTENSIONS and ".mp3" in AUDIO_EXTENSIONS
    d = tmp_path / "sounds"
    d.mkdir()
    fmt = {".wav": {}, ".flac": {}, ".ogg": {}, ".opus": {"format": "OGG", "subtype": "OPUS"}, ".mp3": {},
           ".aif": {"format": "AIFF"}, ".aiff": {}}
    assert set(fmt) == set(AUDIO_EXTENSIONS)
    for k, (ext, kw) in enumerate(fmt.items()):
        _tone(d / f"clip{k}{ext.upper() if ext == '.mp3' else ext}", 300.0 + 100 * k,
              sr=48000 if ext == ".opus" else 32000, **kw)
    (d / "notes.txt").write_text("not audio")
    assert len(load_audio(d / "clip4.MP3")) == 32000  # MP3 decodes (libsndfile >= 1.1)
    s = _searcher(model_ckpt, tmp_path / "cache")
    assert sorted(p.name for p in s.index(d)) == sorted(p.name for p in d.iterdir() if p.suffix != ".txt")
    assert [i for i, _ in audio_items(d)] == sorted(p.name for p in d.iterdir() if p.suffix != ".txt")


def test_a_wav_cut_short_is_read_with_a_warning(tmp_path):
    for subtype, width in (("PCM_16", 2), ("FLOAT", 4)):
        full = _tone(tmp_path / f"full_{subtype}.wav", seconds=1.0, subtype=subtype)
        raw = full.read_bytes()
        cut = tmp_path / f"cut_{subtype}.wav"
        cut.write_bytes(raw[: len(raw) - 8000 * width])  # the last quarter second lost
        with pytest.warns(AudioWarning, match=f"cut_{subtype}.wav: the WAV header promises 32000 samples "
                                              r"\(1.00 s\) but the file holds 24000 \(0.75 s\)"):
            assert len(load_audio(cut)) == 24000
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a whole file, and a WAV with a chunk after its data: no warning
            load_audio(full)
            with open(full, "ab") as f:
                f.write(b"LIST" + (8).to_bytes(4, "little") + b"INFOabcd")
            data = bytearray(full.read_bytes())
            data[4:8] = (len(data) - 8).to_bytes(4, "little")
            full.write_bytes(bytes(data))
            assert len(load_audio(full)) == 32000
