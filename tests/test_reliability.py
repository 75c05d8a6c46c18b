"""Faults and bad inputs a user can meet (issue #19): each case asserts the clear error or the correct result.

1. A checkpoint names how to rebuild its model; loading it must never run code the file chooses.
"""
import builtins
import json
import sys
from pathlib import Path

import pytest
import torch

from aacnb.core import save_torch
from aacnb.training import build_from_checkpoint


# -- 1. checkpoints do not choose code ------------------------------------------------------------------------
EVIL_MODULE = """from pathlib import Path
Path({f!r}).write_text("imported")
def build(**kw):
    Path({f!r}).write_text("called")
    import torch
    return torch.nn.Linear(1, 1)
"""


def _foreign(tmp_path, monkeypatch, kind):
    "(checkpoint naming a foreign builder that would write `flag`, flag, builder name)."
    flag = tmp_path / "flag"
    if kind == "os:system":
        mc = {"builder": "os:system", "kwargs": {"command": f"touch {flag}"}}
    elif kind == "subprocess:run":
        mc = {"builder": "subprocess:run", "kwargs": {"args": ["touch", str(flag)]}}
    else:  # a module of its own on the path, which writes the file when imported and when called
        (tmp_path / "evil_builder_mod.py").write_text(EVIL_MODULE.format(f=str(flag)))
        monkeypatch.syspath_prepend(str(tmp_path))
        mc = {"builder": "evil_builder_mod:build", "kwargs": {}}
    ckpt = tmp_path / "model.pt"
    save_torch({"model": torch.nn.Linear(1, 1).state_dict(), "model_config": mc}, ckpt)
    return ckpt, flag, mc["builder"]


@pytest.mark.parametrize("kind", ["os:system", "subprocess:run", "own module"])
def test_a_foreign_builder_is_refused_without_running_it(tmp_path, monkeypatch, kind):
    ckpt, flag, builder = _foreign(tmp_path, monkeypatch, kind)
    with pytest.raises(ValueError) as e:
        build_from_checkpoint(ckpt)
    msg = str(e.value)
    assert str(ckpt) in msg and repr(builder) in msg and "not a registered model builder" in msg
    assert not flag.exists()
    assert "evil_builder_mod" not in sys.modules  # not even imported


@pytest.mark.parametrize("command", ["search", "caption"])
def test_the_clis_refuse_a_foreign_builder(tmp_path, monkeypatch, capsys, command):
    from aacnb.cli import main
    ckpt, flag, builder = _foreign(tmp_path, monkeypatch, "os:system")
    (tmp_path / "sounds").mkdir()
    args = (["search", "--model", str(ckpt), "--folder", str(tmp_path / "sounds"), "--query", "a dog"]
            if command == "search" else ["caption", "--model", str(ckpt), str(tmp_path / "sounds" / "a.wav")])
    assert main(args) != 0
    err = capsys.readouterr().err
    assert str(ckpt) in err and "'os:system' is not a registered model builder" in err
    assert not flag.exists()


def _biencoder():
    from aacnb.retrieval import build_biencoder
    return build_biencoder("cnn14-tiny", "bert-tiny", embed_dim=16)


def test_kwargs_cannot_point_a_registered_builder_at_other_files(tmp_path):
    m = _biencoder()
    for extra in ({"pretrained": True}, {"audio_weights": str(tmp_path / "w.pth")},
                  {"text_weights": str(tmp_path / "bert")}):
        mc = {**m.model_config, "kwargs": {**m.model_config["kwargs"], **extra}}
        save_torch({"model": m.state_dict(), "model_config": mc}, tmp_path / "m.pt")
        with pytest.raises(ValueError, match=f"kwargs \\['{next(iter(extra))}'\\] would make"):
            build_from_checkpoint(tmp_path / "m.pt")
    mc = {**m.model_config, "kwargs": {**m.model_config["kwargs"], "embed_dim": torch.tensor(16)}}
    save_torch({"model": m.state_dict(), "model_config": mc}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="kwargs must be plain data"):
        build_from_checkpoint(tmp_path / "m.pt")


def test_a_text_encoder_folder_that_carries_code_is_not_run(tmp_path, monkeypatch):
    # `text` may name a local directory (a saved model); one whose config asks for its own classes must be refused
    # even when someone at the terminal would answer transformers' "run the custom code? [y/N]" with y.
    flag = tmp_path / "flag"
    d = tmp_path / "evil_text"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "evilbert", "hidden_size": 8,
                                               "auto_map": {"AutoConfig": "evilcfg.EvilConfig"}}))
    (d / "evilcfg.py").write_text(f"from pathlib import Path\nPath({str(flag)!r}).write_text('ran')\n"
                                  "from transformers import PretrainedConfig\n"
                                  "class EvilConfig(PretrainedConfig):\n    model_type = 'evilbert'\n")
    monkeypatch.setattr(builtins, "input", lambda *a, **k: "y")
    m = _biencoder()
    mc = {**m.model_config, "kwargs": {**m.model_config["kwargs"], "text": str(d)}}
    save_torch({"model": m.state_dict(), "model_config": mc}, tmp_path / "m.pt")
    with pytest.raises(FileNotFoundError, match="evil_text"):
        build_from_checkpoint(tmp_path / "m.pt")
    assert not flag.exists()


def test_the_registered_builders_round_trip(tmp_path):
    from aacnb.captioning import build_captioner
    from aacnb.encoders import Cnn14
    torch.manual_seed(0)
    bi = _biencoder()
    cap_kw = {"decoder": "gru", "vocab_size": 12, "feature_dim": 8, "enc_hidden": 8, "gru_hidden": 16,
              "gru_emb_dim": 16, "attn_size": 16}
    enc_kw = {"width": 1 / 16, "audioset_head": False}
    cases = [(bi, bi.model_config),
             (build_captioner(**cap_kw), {"builder": "aacnb.captioning:build_captioner", "kwargs": cap_kw}),
             (Cnn14(**enc_kw), {"builder": "aacnb.encoders:Cnn14", "kwargs": enc_kw})]
    for i, (model, mc) in enumerate(cases):
        save_torch({"model": model.state_dict(), "model_config": mc}, tmp_path / f"{i}.pt")
        again = build_from_checkpoint(tmp_path / f"{i}.pt")
        assert type(again) is type(model) and not again.training
        a, b = again.state_dict(), model.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
