"Clotho / AudioCaps / MACS dataset objects (aacnb.dataset_classes) on a small generated corpus, download=True included."
import csv
import hashlib
import http.server
import shutil
import threading

import numpy as np
import py7zr
import pytest
import soundfile as sf
import torch

from aacnb.dataset_classes import MACS, AudioCaps, Clotho, collate_items
from aacnb.synthetic import make_corpus

SMALL = dict(n_clips=9, n_audiocaps=6, n_macs=3, clip_seconds=(3.0, 4.0), progress=False, num_workers=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), seed=0, **SMALL)


def _caption_rows(corpus, split, kind="captions"):
    path = corpus / "CLOTHO_v2.1" / "clotho_csv_files" / f"clotho_{kind}_{split}.csv"
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("subset,split", [("dev", "development"), ("val", "validation"), ("eval", "evaluation")])
def test_clotho_items_are_the_published_clips(corpus, subset, split):
    ds = Clotho(corpus, subset)
    rows = _caption_rows(corpus, split)
    keywords = {m["file_name"]: m["keywords"] for m in _caption_rows(corpus, split, "metadata")}
    assert len(ds) == len(rows) > 0
    audio_dir = corpus / "CLOTHO_v2.1" / "clotho_audio_files" / split
    for i, row in enumerate(rows):
        item = ds[i]
        assert item["fname"] == row["file_name"] and item["index"] == i and item["subset"] == subset
        assert item["captions"] == [row[f"caption_{k}"] for k in range(1, 6)]
        data, sr = sf.read(audio_dir / row["file_name"], dtype="float32", always_2d=True)
        assert sr == item["sr"] == 32000
        assert item["audio"].dtype == torch.float32 and item["audio"].shape == (1, data.shape[0])
        assert np.allclose(item["audio"][0].numpy(), data.mean(axis=1), atol=1e-6)
        assert item["keywords"] == keywords[row["file_name"]].split(";") and len(item["keywords"]) > 1


def test_sample_rate_resamples(corpus):
    full, half = Clotho(corpus, "eval")[0], Clotho(corpus, "eval", sample_rate=16000)[0]
    assert half["sr"] == 16000 and half["audio"].shape[1] == full["audio"].shape[1] // 2


def test_columns_and_at(corpus):
    ds = Clotho(corpus, "dev")
    assert ds.column_names[:7] == ["audio", "sr", "captions", "fname", "index", "subset", "dataset"]
    assert set(ds[0]) == set(ds.column_names)
    names = [r["file_name"] for r in _caption_rows(corpus, "development")]
    assert ds.at(None, "fname") == names and ds.at(slice(1, 3), "fname") == names[1:3]
    assert ds.at([2, 0], "fname") == [names[2], names[0]] and ds[-1, "fname"] == names[-1]
    assert ds.at(0, ["fname", "index"]) == {"fname": names[0], "index": 0}
    with pytest.raises(KeyError, match="no column 'caption'"):
        ds.at(0, "caption")
    with pytest.raises(IndexError, match=f"index {len(ds)} out of range"):
        ds[len(ds)]
    assert Clotho(corpus, "dev", transform=lambda item: item["fname"])[1] == names[1]


def test_subset_names_are_checked(corpus):
    assert Clotho(corpus, "development").subset == "dev" and Clotho(corpus).subset == "dev"
    with pytest.raises(ValueError, match="unknown Clotho split 'training'"):
        Clotho(corpus, "training")
    with pytest.raises(ValueError, match="re-split"):
        Clotho(corpus, "test")
    with pytest.raises(ValueError, match="'dcase_aac_test' is a DCASE challenge set"):
        Clotho(corpus, "dcase_aac_test")
    with pytest.raises(ValueError, match="unknown AudioCaps subset 'dev'"):
        AudioCaps(corpus, "dev")
    with pytest.raises(ValueError, match="one subset, 'full'"):
        MACS(corpus, "train")


def test_missing_data_says_how_to_get_it(corpus, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        Clotho(tmp_path / "empty", "eval")
    msg = str(e.value)
    assert "clotho_captions_evaluation.csv does not exist" in msg and str(tmp_path / "empty") in msg
    assert "download=True" in msg and "aacnb download clotho" in msg
    # the CSVs are there but the audio folder is not: an empty dataset would be a silent mistake
    root = tmp_path / "no_audio"
    shutil.copytree(corpus / "CLOTHO_v2.1" / "clotho_csv_files", root / "CLOTHO_v2.1" / "clotho_csv_files")
    with pytest.raises(FileNotFoundError, match="no clip listed has its audio file.*download=True"):
        Clotho(root, "eval")
    with pytest.raises(FileNotFoundError, match="AUDIOCAPS/audio/<subset>/"):
        AudioCaps(tmp_path / "empty", "val")


def test_audiocaps_and_macs(corpus):
    ac = AudioCaps(corpus, "train")
    rows = list(csv.DictReader(open(corpus / "AUDIOCAPS" / "csv_files" / "train.csv", encoding="utf-8")))
    assert len(ac) == len({r["youtube_id"] for r in rows}) > 0
    item = ac[0]
    assert item["audio"].shape[0] == 1 and item["sr"] == 32000 and item["dataset"] == "audiocaps"
    assert sorted(item["captions"]) == sorted(r["caption"] for r in rows if r["youtube_id"] == ac.records[0].audio_id)
    macs = MACS(corpus)
    assert len(macs) == 3 and macs[0]["subset"] == "full" and macs[0]["captions"]
    assert macs.at(0, "fname") == macs.records[0].audio_path.name


class _FolderHandler(http.server.SimpleHTTPRequestHandler):
    "Serves the server's `folder`; records each request's path instead of logging it."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(self.server_folder), **kwargs)

    def log_message(self, *args):
        self.server.requests.append(self.path)


@pytest.fixture
def file_server(tmp_path):
    "A local HTTP server over a folder: the download path runs for real, without the network."
    folder = tmp_path / "served"
    folder.mkdir()
    handler = type("Handler", (_FolderHandler,), {"server_folder": folder})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.requests, srv.folder, srv.url = [], folder, f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_download_true_fetches_the_subset(corpus, file_server, tmp_path):
    "download=True runs `aacnb download clotho` for that subset: fetch, MD5-check, extract, then read."
    src = corpus / "CLOTHO_v2.1"
    with py7zr.SevenZipFile(file_server.folder / "clotho_audio_evaluation.7z", "w") as z:
        for wav in sorted((src / "clotho_audio_files" / "evaluation").glob("*.wav")):
            z.write(wav, arcname=f"evaluation/{wav.name}")
    for kind in ("captions", "metadata"):
        shutil.copy(src / "clotho_csv_files" / f"clotho_{kind}_evaluation.csv", file_server.folder)
    table = {"evaluation": {kind: {"name": name, "url": f"{file_server.url}/{name}",
                                   "md5": hashlib.md5((file_server.folder / name).read_bytes()).hexdigest()}
                            for kind, name in [("audio", "clotho_audio_evaluation.7z"),
                                               ("captions", "clotho_captions_evaluation.csv"),
                                               ("metadata", "clotho_metadata_evaluation.csv")]}}
    root = tmp_path / "fetched"
    got = Clotho(root, "eval", download=True, download_options={"files": table})
    assert (root / "CLOTHO_v2.1" / "clotho_audio_files" / "evaluation").is_dir()
    mine = Clotho(corpus, "eval")
    assert got.at(None, "fname") == mine.at(None, "fname") and got.at(None, "captions") == mine.at(None, "captions")
    assert torch.equal(got[0]["audio"], mine[0]["audio"])
    n = len(file_server.requests)
    assert n == 3
    Clotho(root, "eval", download=True, download_options={"files": table})  # complete: nothing fetched again
    assert len(file_server.requests) == n


def test_collate_pads_to_the_longest_clip(corpus):
    ds = Clotho(corpus, "dev")
    items = [ds[i] for i in range(len(ds))]
    assert len({it["audio"].shape[1] for it in items}) > 1          # the corpus's clips differ in length
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds), collate_fn=collate_items)))
    lengths = [it["audio"].shape[1] for it in items]
    assert batch["audio"].shape == (len(ds), 1, max(lengths)) and batch["audio_lengths"].tolist() == lengths
    for b, it in enumerate(items):
        assert torch.equal(batch["audio"][b, :, : lengths[b]], it["audio"])
        assert not batch["audio"][b, :, lengths[b]:].any()               # zeros after the clip
    assert batch["captions"] == [it["captions"] for it in items] and batch["fname"] == [it["fname"] for it in items]
    with pytest.raises(ValueError, match="empty batch"):
        collate_items([])


def test_audiocaps_download_true_fetches_the_csv_and_says_where_audio_goes(file_server, tmp_path):
    (file_server.folder / "val.csv").write_text("audiocap_id,youtube_id,start_time,caption\n"
                                                "1,abc123,30,a dog barks\n2,abc123,30,a dog is barking\n")
    root = tmp_path / "ac"
    with pytest.raises(FileNotFoundError, match=r"no clip listed has its audio file.*AUDIOCAPS/audio/<subset>/"):
        AudioCaps(root, "val", download=True, download_options={"base_url": file_server.url})
    assert (root / "AUDIOCAPS" / "csv_files" / "val.csv").read_text().count("abc123") == 2
    (root / "AUDIOCAPS" / "audio" / "val").mkdir(parents=True)           # the audio, supplied by hand
    sf.write(root / "AUDIOCAPS" / "audio" / "val" / "abc123.wav", np.zeros(16000, "float32"), 16000)
    ds = AudioCaps(root, "val")
    assert len(ds) == 1 and ds[0]["captions"] == ["a dog barks", "a dog is barking"] and ds[0]["fname"] == "abc123.wav"
