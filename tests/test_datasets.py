"Readers for Clotho / AudioCaps / MACS on fixtures in their published formats, the 9:1 re-split, Dataset + collate."
import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from aacnb.datasets import (AudioCaptionDataset, AudioCaptionRecord, clotho_splits, collate_audio, make_resplit,
                            read_audiocaps, read_clotho, read_macs)


@pytest.fixture
def warnings_log():
    "Collect the messages of the aacnb.datasets logger (it does not propagate to the root logger)."
    msgs = []

    class H(logging.Handler):
        def emit(self, record):
            msgs.append(record.getMessage())

    h = H(level=logging.WARNING)
    lg = logging.getLogger("aacnb.datasets")
    lg.addHandler(h)
    yield msgs
    lg.removeHandler(h)


def _wav(path, seconds=0.5, sr=16000, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    y = 0.1 * np.sin(np.arange(int(seconds * sr)) / 5).astype("float32")
    sf.write(path, np.stack([y] * channels, 1) if channels > 1 else y, sr)


def _clotho(root, sizes=(("development", 6), ("validation", 2), ("evaluation", 2)), missing=()):
    c = root / "CLOTHO_v2.1"
    (c / "clotho_csv_files").mkdir(parents=True, exist_ok=True)
    for split, n in sizes:
        rows = ["file_name,caption_1,caption_2,caption_3,caption_4,caption_5"]
        for i in range(n):
            name = f"{split} clip, {i}.wav"  # spaces and a comma, as real Clotho names have
            rows.append(f'"{name}",A bird sings {i}.,"Wind blows, then rain.",cap three,cap four,cap five')
            if name not in missing:
                _wav(c / "clotho_audio_files" / split / name, seconds=0.4 + 0.05 * i)  # >= 0.32 s: load_audio pads shorter clips
        (c / "clotho_csv_files" / f"clotho_captions_{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        meta = ["file_name,keywords,sound_id,sound_link,start_end_samples,manufacturer,license"]
        meta += [f'"{split} clip, {i}.wav",bird;caf\u00e9,{i},https://freesound.org/x,,M\u00fcller,CC0' for i in range(n)]
        (c / "clotho_csv_files" / f"clotho_metadata_{split}.csv").write_bytes(("\n".join(meta) + "\n").encode("latin-1"))
    return c


def test_read_clotho(tmp_path, warnings_log):
    _clotho(tmp_path)
    recs = read_clotho(tmp_path, "development")
    assert len(recs) == 6 and not warnings_log
    r = recs[2]
    assert isinstance(r, AudioCaptionRecord)
    assert r.audio_id == "development clip, 2.wav" and r.audio_path.is_file()
    assert r.captions == ["A bird sings 2.", "Wind blows, then rain.", "cap three", "cap four", "cap five"]
    assert (r.dataset, r.split) == ("clotho", "development")
    assert r.metadata["keywords"] == "bird;caf\u00e9" and r.metadata["manufacturer"] == "M\u00fcller"  # latin-1
    assert [x.audio_id for x in read_clotho(tmp_path, "eval")] == ["evaluation clip, 0.wav", "evaluation clip, 1.wav"]
    # root may also point at CLOTHO_v2.1 itself
    assert len(read_clotho(tmp_path / "CLOTHO_v2.1", "val")) == 2


def test_read_clotho_missing_audio_reported_once(tmp_path, warnings_log):
    gone = [f"development clip, {i}.wav" for i in (1, 4)]
    _clotho(tmp_path, missing=gone)
    recs = read_clotho(tmp_path, "development")
    assert [r.audio_id for r in recs] == [f"development clip, {i}.wav" for i in (0, 2, 3, 5)]
    assert len(warnings_log) == 1
    assert "2 of 6" in warnings_log[0] and gone[0] in warnings_log[0] and gone[1] in warnings_log[0]


def test_read_clotho_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="aacnb download clotho"):
        read_clotho(tmp_path, "development")
    _clotho(tmp_path)
    with pytest.raises(ValueError, match="unknown Clotho split"):
        read_clotho(tmp_path, "training")


def _audiocaps(root):
    a = root / "AUDIOCAPS"
    (a / "csv_files").mkdir(parents=True)
    train = ["audiocap_id,youtube_id,start_time,caption"]
    for i, yid in enumerate(["AAA", "BBB", "CCC", "DDD", "EEE"]):
        train.append(f"{100 + i},{yid},30,A car engine idles {i}")
    (a / "csv_files" / "train.csv").write_text("\n".join(train) + "\n")
    val = ["audiocap_id,youtube_id,start_time,caption"]
    k = 0
    for yid in ["VV1", "VV2"]:
        for j in range(5):
            val.append(f'{200 + k},{yid},{10 * j},"People talk, {yid} {j}"')
            k += 1
    (a / "csv_files" / "val.csv").write_text("\n".join(val) + "\n")
    _wav(a / "audio" / "train" / "AAA.wav")
    _wav(a / "audio" / "train" / "BBB.flac")  # CCC missing
    _wav(a / "audio" / "train" / "DDD_30.wav")  # <youtube_id>_<start_time>
    _wav(a / "audio" / "train" / "YEEE.wav")  # AudioSet-style name
    _wav(a / "audio" / "val" / "VV1.ogg", sr=32000)
    _wav(a / "audio" / "val" / "VV2.wav", channels=2)


def test_read_audiocaps(tmp_path, warnings_log):
    _audiocaps(tmp_path)
    tr = read_audiocaps(tmp_path, "train")
    assert [r.audio_id for r in tr] == ["AAA", "BBB", "DDD", "EEE"]
    assert [len(r.captions) for r in tr] == [1, 1, 1, 1]
    assert tr[1].audio_path.suffix == ".flac" and tr[0].metadata["start_time"] == "30"
    assert len(warnings_log) == 1 and "1 of 5" in warnings_log[0] and "CCC" in warnings_log[0]
    va = read_audiocaps(tmp_path, "val")
    assert [r.audio_id for r in va] == ["VV1", "VV2"]
    assert va[0].captions == [f"People talk, VV1 {j}" for j in range(5)]
    assert va[0].audio_path.suffix == ".ogg" and va[1].split == "val" and va[1].dataset == "audiocaps"
    with pytest.raises(FileNotFoundError, match="test.csv"):
        read_audiocaps(tmp_path, "test")


def test_read_macs(tmp_path, warnings_log):
    m = tmp_path / "MACS"
    m.mkdir()
    (m / "MACS.yaml").write_text(
        "files:\n"
        "- filename: airport-lisbon-1000-40000-a.wav\n"
        "  annotations:\n"
        "  - annotator_id: 1\n    sentence: adults talking and footsteps\n    tags: [adults_talking, footsteps]\n"
        "  - annotator_id: 7\n    sentence: people walk in a large hall\n    tags: [footsteps]\n"
        "- filename: park-helsinki-241-7162-a.wav\n"
        "  annotations:\n"
        "  - annotator_id: 2\n    sentence: birds singing in a park\n    tags: [birds_singing]\n"
        "- filename: metro-paris-1-2-a.wav\n"
        "  annotations:\n"
        "  - annotator_id: 3\n    sentence: a train arrives\n    tags: []\n")
    _wav(m / "audio" / "airport-lisbon-1000-40000-a.wav")
    _wav(m / "audio" / "park-helsinki-241-7162-a.wav")
    recs = read_macs(tmp_path)
    assert [r.audio_id for r in recs] == ["airport-lisbon-1000-40000-a.wav", "park-helsinki-241-7162-a.wav"]
    assert recs[0].captions == ["adults talking and footsteps", "people walk in a large hall"]
    assert recs[0].metadata["tags"][0] == ["adults_talking", "footsteps"]
    assert (recs[1].dataset, recs[1].split) == ("macs", "train")
    assert len(warnings_log) == 1 and "metro-paris-1-2-a.wav" in warnings_log[0]
    (m / "MACS.yaml").write_text("something: else\n")
    with pytest.raises(ValueError, match="files"):
        read_macs(tmp_path)


def test_resplit_deterministic_saved_and_reused(tmp_path):
    c = _clotho(tmp_path / "a", sizes=(("development", 40), ("validation", 10), ("evaluation", 3)))
    m = make_resplit(tmp_path / "a", seed=3)
    assert (len(m["train"]), len(m["val"])) == (45, 5)
    assert not set(m["train"]) & set(m["val"])
    path = c / "resplit_seed3.json"
    saved = json.loads(path.read_text())
    assert saved["train"] == m["train"] and saved["seed"] == 3
    # determinism: an independent copy of the data gives the same split for the same seed
    _clotho(tmp_path / "b", sizes=(("development", 40), ("validation", 10), ("evaluation", 3)))
    assert make_resplit(tmp_path / "b", seed=3)["val"] == m["val"]
    assert make_resplit(tmp_path / "b", seed=4)["val"] != m["val"]
    # reuse: the manifest on disk wins (a hand-edited but consistent manifest is returned as is)
    saved["train"], saved["val"] = saved["train"][1:], saved["val"] + saved["train"][:1]
    path.write_text(json.dumps(saved))
    assert make_resplit(tmp_path / "a", seed=3)["val"] == saved["val"]
    with pytest.raises(ValueError, match="train_fraction"):
        make_resplit(tmp_path / "a", seed=3, train_fraction=0.8)


def test_resplit_detects_changed_csv(tmp_path):
    c = _clotho(tmp_path)
    make_resplit(tmp_path, seed=0)
    csv = c / "clotho_csv_files" / "clotho_captions_validation.csv"
    csv.write_text(csv.read_text() + '"new clip.wav",a,b,c,d,e\n')
    with pytest.raises(ValueError, match="does not match"):
        make_resplit(tmp_path, seed=0)


def test_clotho_splits(tmp_path, warnings_log):
    _clotho(tmp_path, sizes=(("development", 16), ("validation", 4), ("evaluation", 3)),
            missing=("validation clip, 0.wav",))
    sp = clotho_splits(tmp_path, seed=0)
    assert set(sp) == {"train", "val", "test"}
    assert len(sp["train"]) + len(sp["val"]) == 19 and len(sp["test"]) == 3
    assert {r.split for r in sp["train"]} == {"train"} and {r.split for r in sp["test"]} == {"test"}
    m = json.loads((tmp_path / "CLOTHO_v2.1" / "resplit_seed0.json").read_text())
    assert (len(m["train"]), len(m["val"])) == (18, 2)  # the manifest lists every clip of the CSVs
    assert all(r.audio_path.is_file() for v in sp.values() for r in v)


def test_dataset_pairs_and_clips(tmp_path):
    _clotho(tmp_path)
    recs = read_clotho(tmp_path, "development")
    recs[1].captions = recs[1].captions[:2]
    pairs = AudioCaptionDataset(recs, mode="pairs", sample_rate=32000)
    assert len(pairs) == 5 * 5 + 2
    it = pairs[5]  # first caption of clip 1
    assert (it["audio_id"], it["index"], it["caption_index"]) == (recs[1].audio_id, 1, 0)
    assert it["caption"] == "A bird sings 1." and it["audio"].dtype == torch.float32
    assert it["audio"].shape == (2 * sf.info(str(recs[1].audio_path)).frames,)  # 16 kHz file -> 32 kHz
    assert pairs[-1]["index"] == 5
    clips = AudioCaptionDataset(recs, mode="clips", max_seconds=0.32)
    assert len(clips) == 6
    c = clips[5]
    assert c["captions"] == recs[5].captions and c["index"] == 5 and c["audio"].shape == (10240,)
    with pytest.raises(ValueError, match="mode"):
        AudioCaptionDataset(recs, mode="both")
    with pytest.raises(IndexError):
        clips[6]


def test_collate_audio_padding_and_lengths(tmp_path):
    _clotho(tmp_path)
    recs = read_clotho(tmp_path, "development")
    ds = AudioCaptionDataset(recs, mode="pairs")
    loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False, collate_fn=collate_audio)
    b = next(iter(loader))
    n0, n5 = (2 * sf.info(str(recs[i].audio_path)).frames for i in (0, 5))  # 0.40 s and 0.65 s at 32 kHz
    assert b["audio"].shape == (3, n0) and b["audio_lengths"].tolist() == [n0] * 3
    b = collate_audio([ds[0], ds[29]])  # clip 0 and clip 5
    assert b["audio"].shape == (2, n5) and b["audio_lengths"].tolist() == [n0, n5]
    assert torch.all(b["audio"][0, n0:] == 0) and b["audio"][1, n5 - 1] != 0
    assert b["caption"] == [ds[0]["caption"], ds[29]["caption"]] and b["index"].tolist() == [0, 5]
    assert b["audio_id"] == [recs[0].audio_id, recs[5].audio_id]
    clips = collate_audio([AudioCaptionDataset(recs, mode="clips")[i] for i in (0, 1)])
    assert isinstance(clips["captions"], list) and len(clips["captions"][1]) == 5


def test_dataset_with_features(tmp_path):
    recs = [AudioCaptionRecord(f"c{i}", tmp_path / f"c{i}.wav", ["a b", "c d"], "clotho", "development")
            for i in range(3)]  # no audio on disk: features only
    cache = {f"c{i}": np.full((2 + i, 8), i + 1, "float32") for i in range(3)}
    ds = AudioCaptionDataset(recs, mode="pairs", features=cache)
    b = collate_audio([ds[i] for i in range(len(ds))])
    assert "audio" not in b and b["features"].shape == (6, 4, 8)
    assert b["feature_lengths"].tolist() == [2, 2, 3, 3, 4, 4]
    assert torch.all(b["features"][0, 2:] == 0) and torch.all(b["features"][5] == 3)
    emb = {f"c{i}": np.ones(8, "float32") for i in range(3)}  # clip-level embeddings (D,)
    b = collate_audio([AudioCaptionDataset(recs, "clips", features=emb)[i] for i in range(3)])
    assert b["features"].shape == (3, 8) and b["feature_lengths"].tolist() == [1, 1, 1]
    with pytest.raises(KeyError, match="c0"):
        AudioCaptionDataset(recs, "clips", features={})[0]


def test_dataset_with_real_feature_cache(tmp_path):
    "End to end with aacnb.features: Clotho names (spaces, commas) as cache keys, features padded by collate."
    from aacnb.features import extract_features

    _clotho(tmp_path)
    recs = read_clotho(tmp_path, "development")

    def fn(wavs, lengths):  # (B, S), (B,) -> per clip (T, 4) with T depending on the length
        return [np.ones((int(n) // 3200, 4), "float32") for n in lengths]

    cache = extract_features([(r.audio_id, r.audio_path) for r in recs], fn, tmp_path / "f.h5",
                             settings={"fn": "test"}, batch_size=4, progress=False)
    ds = AudioCaptionDataset(recs, mode="clips", features=cache)
    b = collate_audio([ds[0], ds[5]])
    n0, n5 = (2 * sf.info(str(recs[i].audio_path)).frames // 3200 for i in (0, 5))
    assert b["features"].shape == (2, n5, 4) and b["feature_lengths"].tolist() == [n0, n5]


def test_missing_audio_folder_says_how_to_get_it(tmp_path, warnings_log):
    c = _clotho(tmp_path, sizes=(("evaluation", 2),))
    import shutil
    shutil.rmtree(c / "clotho_audio_files")
    assert read_clotho(tmp_path, "evaluation") == []
    assert len(warnings_log) == 1 and "2 of 2" in warnings_log[0] and "aacnb download clotho" in warnings_log[0]
