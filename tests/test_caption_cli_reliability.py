"""Issue #19, item 4: `aacnb caption` checks its feature extractor and its options, and keeps errors per file.

A captioner records the fingerprint of the extractor it was trained on (`model_config["extractor_sha256"]`);
another extractor is refused (or, with --force-extractor, used with a loud warning); captioners from before
the fingerprint still work, with a warning. Bad options are refused before anything is decoded, and a file
that cannot be read or captioned costs only its own result.
"""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from aacnb.caption import AudioCaptioner, ExtractorWarning, cli_caption
from aacnb.captioning import build_captioner
from aacnb.core import save_torch
from aacnb.encoders import Cnn14, weights_sha256
from aacnb.text import Vocabulary

ENC_KW = {"width": 1 / 16, "audioset_head": False}  # 128-d frames


def _wav(path, seconds=1.0, f0=440.0):
    t = np.arange(int(32000 * seconds)) / 32000
    sf.write(path, (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), 32000)
    return str(path)


def _extractor(path, seed):
    torch.manual_seed(seed)
    enc = Cnn14(**ENC_KW)
    save_torch({"model": enc.state_dict(), "model_config": {"builder": "aacnb.encoders:Cnn14", "kwargs": ENC_KW}}, path)
    return enc


def _captioner(path, extractor_path, fingerprint="absent"):
    vocab = Vocabulary.build(["a dog barks", "rain falls on a roof", "a bell rings"])
    kw = dict(decoder="transformer", vocab_size=len(vocab), feature_dim=128, enc_hidden=8, d_model=16, nhead=2,
              dim_feedforward=32, dropout=0.0, enc_dropout=0.0, max_positions=40)
    mc = {"builder": "aacnb.captioning:build_captioner", "kwargs": kw, "vocab": vocab.itos,
          "extractor": str(extractor_path)}
    if fingerprint != "absent":
        mc["extractor_sha256"] = fingerprint
    torch.manual_seed(3)
    save_torch({"model": build_captioner(**kw).state_dict(), "model_config": mc}, path)
    return path


@pytest.fixture
def setup(tmp_path):
    "A captioner trained (as far as its checkpoint says) on extractor A; another extractor B of the same shape."
    a = _extractor(tmp_path / "A.pt", seed=0)
    _extractor(tmp_path / "B.pt", seed=1)
    cap = _captioner(tmp_path / "cap.pt", tmp_path / "A.pt", weights_sha256(a))
    files = [_wav(tmp_path / "one.wav", 1.0, 300.0), _wav(tmp_path / "two.wav", 1.5, 900.0)]
    return tmp_path, cap, files


def test_the_extractor_it_was_trained_on_is_accepted_silently(setup, capsys):
    d, cap, files = setup
    assert cli_caption(["--model", str(cap), *files, "--device", "cpu", "--json"]) == 0   # recorded path
    out = capsys.readouterr()
    assert "WARNING" not in out.err and all("caption" in r for r in json.loads(out.out))
    assert cli_caption(["--model", str(cap), "--extractor", str(d / "A.pt"), *files, "--device", "cpu"]) == 0


def test_another_extractor_is_refused_naming_both_fingerprints(setup, capsys):
    d, cap, files = setup
    assert cli_caption(["--model", str(cap), "--extractor", str(d / "B.pt"), *files, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(d / "B.pt") in err and "is not the one" in err and str(cap) in err and "--force-extractor" in err
    want = torch.load(cap, weights_only=False)["model_config"]["extractor_sha256"]
    assert want[:16] in err
    with pytest.raises(ValueError, match="is not the one"):
        AudioCaptioner.from_checkpoints(cap, extractor=d / "B.pt", device="cpu")


def test_force_extractor_uses_it_and_says_so_loudly(setup, capsys):
    d, cap, files = setup
    rc = cli_caption(["--model", str(cap), "--extractor", str(d / "B.pt"), "--force-extractor", *files,
                      "--device", "cpu", "--json"])
    out = capsys.readouterr()
    assert rc == 0 and all("caption" in r for r in json.loads(out.out))
    assert "WARNING: FORCED" in out.err and "is not the one" in out.err
    with pytest.warns(ExtractorWarning, match="FORCED"):
        AudioCaptioner.from_checkpoints(cap, extractor=d / "B.pt", device="cpu", force_extractor=True)


def test_a_captioner_from_before_fingerprints_still_works_with_a_warning(tmp_path, capsys):
    _extractor(tmp_path / "A.pt", seed=0)
    cap = _captioner(tmp_path / "old.pt", tmp_path / "A.pt")  # no extractor_sha256 in its model_config
    f = _wav(tmp_path / "x.wav")
    assert cli_caption(["--model", str(cap), f, "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f + "\t") and "WARNING" in out.err and "no fingerprint" in out.err
    with pytest.warns(ExtractorWarning, match="cannot check"):
        AudioCaptioner.from_checkpoints(cap, device="cpu")


def test_a_missing_recorded_extractor_is_named_as_the_extractor(setup, capsys):
    d, cap, files = setup
    (d / "A.pt").rename(d / "moved.pt")
    assert cli_caption(["--model", str(cap), *files, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "feature extractor" in err and str(d / "A.pt") in err and "--extractor" in err
    assert cli_caption(["--model", str(cap), "--extractor", str(d / "moved.pt"), *files, "--device", "cpu"]) == 0


def test_a_wrong_type_extractor_is_refused_up_front(setup, capsys):
    d, cap, files = setup
    assert cli_caption(["--model", str(cap), "--extractor", str(cap), *files, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "holds a Captioner, not a retrieval model or an audio encoder" in err and "Traceback" not in err
    assert cli_caption(["--model", str(cap), "--extractor", str(d), *files, "--device", "cpu"]) == 2
    assert "directory" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--max-len", "0"), ("--beam", "0"), ("--batch-size", "0"),
                                           ("--max-seconds", "0"), ("--max-seconds", "nan")])
def test_bad_options_are_refused_before_anything_runs(setup, capsys, option, value):
    d, cap, files = setup
    with pytest.raises(SystemExit) as e:
        cli_caption(["--model", str(cap), *files, option, value, "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err


def test_options_the_model_cannot_take_are_refused_before_decoding(setup, capsys):
    d, cap, files = setup
    assert cli_caption(["--model", str(cap), *files, "--max-len", "41", "--device", "cpu"]) == 2  # 40 positions
    assert "max_len 41 exceeds the 40 token positions" in capsys.readouterr().err
    assert cli_caption(["--model", str(cap), *files, "--beam", "50", "--device", "cpu"]) == 2
    assert "beam size 50 exceeds the vocabulary" in capsys.readouterr().err
    assert cli_caption(["--model", str(cap), *files, "--max-len", "40", "--device", "cpu"]) == 0  # the longest


def test_errors_stay_per_file(setup, capsys, monkeypatch):
    d, cap, files = setup
    (d / "folder").mkdir()
    (d / "bad.wav").write_bytes(b"not audio")
    args = ["--model", str(cap), str(d / "folder"), files[0], str(d / "bad.wav"), str(d / "none.wav"), files[1],
            "--device", "cpu", "--json"]
    assert cli_caption(args) == 1
    res = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in res] == args[2:7]
    assert "is a directory" in res[0]["error"] and "no such audio file" not in res[0]["error"]
    assert "could not decode" in res[2]["error"] and "no such audio file" in res[3]["error"]
    assert "caption" in res[1] and "caption" in res[4]
    # decoding that fails for one batch costs that batch's files only (here: the 1.5-s file, batched alone)
    real = AudioCaptioner.caption_waveforms

    def flaky(self, waveforms, lengths):
        if waveforms.shape[1] > 40000:
            raise RuntimeError("out of memory")
        return real(self, waveforms, lengths)

    monkeypatch.setattr(AudioCaptioner, "caption_waveforms", flaky)
    assert cli_caption(["--model", str(cap), *files, "--batch-size", "1", "--device", "cpu", "--json"]) == 1
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert "caption" in res[0] and "captioning failed (RuntimeError: out of memory)" in res[1]["error"]
    assert files[1] in out.err
