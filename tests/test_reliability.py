"""Faults and bad inputs a user can meet (issue #19): each case asserts the clear error or the correct result.

1. A checkpoint names how to rebuild its model; loading it must never run code the file chooses.
2. The study's runs are fingerprinted by what determines their results, never by how the profile was named or
   where reports and data lie; a run that must be redone is moved aside, never deleted.

The study tests run the real plan, runner and markers of the tiny profile (33 runs), with papermill's
`execute_notebook` replaced by a stand-in that writes a run's files at once: the logic under test is the
runner's, not the notebooks' (tests/test_study.py runs the real notebooks on a smaller profile).
"""
import builtins
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from aacnb import study
from aacnb.core import save_torch
from aacnb.checkpoints import build_from_checkpoint


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


# -- 2. runs are fingerprinted by what they are, and never deleted --------------------------------------------
class FakePapermill:
    "Stands in for `papermill.execute_notebook`: writes the run's outputs at once; can stop a run midway."
    def __init__(self):
        self.ran, self.stop_at = [], None

    def __call__(self, src, out, parameters=None, cwd=None, **kw):
        name = parameters["run_name"]
        (Path(cwd) / "partial.pt").write_text(json.dumps(parameters))  # what training leaves behind midway
        if name == self.stop_at:
            self.stop_at = None
            raise KeyboardInterrupt
        self.ran.append(name)
        (Path(cwd) / "metrics.json").write_text(json.dumps({"run": name, "metrics": {}}))
        if name == "features":  # the runner opens a finished features run's cache: leave a finished (empty) one
            import h5py
            with h5py.File(Path(cwd) / "features.h5", "w") as f:
                f.create_group("features")
                f.attrs.update(complete=True, settings="{}", failed="{}")
        Path(out).write_text("{}")


@pytest.fixture
def fake_pm(monkeypatch):
    import papermill
    fake = FakePapermill()
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    return fake


def _pipeline(profile):
    out = __import__("io").StringIO()
    res = study.run_pipeline(str(profile), report=False, out=out)
    return res, out.getvalue()


def _tree(root: Path) -> dict:
    "Every file under `root` -> its bytes (relative paths)."
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tiny_yaml():
    return study.profiles_dir() / "tiny.yaml"


def test_renaming_copying_or_moving_the_profile_and_reports_reruns_and_deletes_nothing(tmp_path, monkeypatch,
                                                                                        fake_pm):
    res, _ = _pipeline("tiny")
    n = len(res["runs"])
    assert n == 33 and len(fake_pm.ran) == n
    runs = Path(os.environ["AACNB_REPORTS"]) / "runs" / "tiny"
    before = _tree(runs)
    copy = tmp_path / "elsewhere" / "my_copy.yaml"
    copy.parent.mkdir()
    shutil.copy(_tiny_yaml(), copy)
    for profile in (_tiny_yaml(), os.path.relpath(_tiny_yaml()), copy):  # `tiny`, its path as typed, a copy
        res, out = _pipeline(profile)
        assert res["ran"] == [] and len(res["skipped"]) == n, out
    # move the reports and the data to other folders
    new_reports, new_data = tmp_path / "moved" / "reports", tmp_path / "moved" / "data"
    new_reports.parent.mkdir()
    shutil.move(os.environ["AACNB_REPORTS"], new_reports)
    monkeypatch.setenv("AACNB_REPORTS", str(new_reports))
    monkeypatch.setenv("AACNB_DATA", str(new_data))
    res, out = _pipeline(copy)
    assert res["ran"] == [] and len(res["skipped"]) == n, out
    assert len(fake_pm.ran) == n  # nothing executed after the first call
    assert _tree(new_reports / "runs" / "tiny") == before  # every file still there, unchanged; nothing set aside


def test_a_run_whose_parameters_changed_is_redone_and_its_old_folder_moved_aside(tmp_path, fake_pm):
    _pipeline("tiny")
    runs = Path(os.environ["AACNB_REPORTS"]) / "runs" / "tiny"
    (runs / "cap_transformer2_s0_xe" / "keep.txt").write_text("hours of training")
    old_marker = (runs / "cap_transformer2_s0_xe" / study.MARKER).read_bytes()
    raw = yaml.safe_load(_tiny_yaml().read_text())
    raw["captioning"]["xe"]["epochs"] += 1
    edited = tmp_path / "tiny.yaml"
    edited.write_text(yaml.safe_dump(raw))
    fake_pm.ran.clear()
    res, out = _pipeline(edited)
    # the XE runs changed; the SCST runs and the ensembles start from them, so they are redone too
    redone = sorted(r for r in res["runs"] if r.startswith("cap_"))
    assert len(redone) == 6 + 6 + 3 and sorted(res["ran"]) == redone and sorted(fake_pm.ran) == redone
    for r in redone:
        old = list(runs.glob(f"{r}.old-*"))
        assert len(old) == 1 and (old[0] / study.MARKER).exists() and (old[0] / f"{r}.ipynb").exists(), r
        assert f"{r}: moved the previous finished run to {old[0]}" in out
        assert json.loads((runs / r / study.MARKER).read_text())["previous"] == str(old[0])
    old = next(runs.glob("cap_transformer2_s0_xe.old-*"))
    assert (old / "keep.txt").read_text() == "hours of training" and (old / study.MARKER).read_bytes() == old_marker
    assert not (runs / "cap_transformer2_s0_xe" / "keep.txt").exists()
    assert not list(runs.glob("ret_*.old-*")) and not list(runs.glob("corpus.old-*"))


def _v1(record: dict) -> dict:
    "A COMPLETE.json / STARTED.json as written before fingerprints: the parameters as typed, hashed as they were."
    params = {k: v for k, v in record["params"].items() if k not in ("run_name", "out_dir")}
    rec = {k: v for k, v in record.items() if k not in ("fingerprint", "places", "previous")}
    rec["param_hash"] = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return rec


@pytest.mark.parametrize("old_started", [False, True])
def test_an_interrupted_run_resumes_in_its_folder(tmp_path, fake_pm, old_started):
    fake_pm.stop_at = "features"
    with pytest.raises(KeyboardInterrupt):
        _pipeline("tiny")
    runs = Path(os.environ["AACNB_REPORTS"]) / "runs" / "tiny"
    started = runs / "features" / "STARTED.json"
    partial = (runs / "features" / "partial.pt").read_text()
    if old_started:  # interrupted before the upgrade
        started.write_text(json.dumps(_v1(json.loads(started.read_text()))))
    res, out = _pipeline(_tiny_yaml())  # named differently this time
    assert "features" in res["ran"] and not list(runs.glob("features.old-*")), out
    assert (runs / "features" / "partial.pt").read_text() == partial  # resumed in place: its files kept


def test_markers_from_before_fingerprints_still_count_and_are_upgraded(tmp_path, monkeypatch, fake_pm):
    res, _ = _pipeline("tiny")
    runs = Path(os.environ["AACNB_REPORTS"]) / "runs" / "tiny"
    for r in res["runs"]:
        for f in (study.MARKER, "STARTED.json"):
            (runs / r / f).write_text(json.dumps(_v1(json.loads((runs / r / f).read_text()))))
    # a moved reports folder and a profile named by its path: what used to redo all 33 runs
    new_reports = tmp_path / "moved_reports"
    shutil.move(os.environ["AACNB_REPORTS"], new_reports)
    monkeypatch.setenv("AACNB_REPORTS", str(new_reports))
    runs = new_reports / "runs" / "tiny"
    fake_pm.ran.clear()
    res2, out = _pipeline(_tiny_yaml())
    assert res2["ran"] == [] and fake_pm.ran == [] and out.count("marker rewritten with its fingerprint") == 33, out
    assert all(json.loads((runs / r / study.MARKER).read_text())["fingerprint"] == 2 for r in res["runs"])
    res3, out = _pipeline("tiny")
    assert res3["ran"] == [] and "rewritten" not in out
    # an old marker whose parameters really differ is not taken for the run
    m = runs / "param_counts" / study.MARKER
    rec = json.loads(m.read_text())
    rec["params"]["vocab_size"] += 1
    m.write_text(json.dumps(_v1(rec)))
    res4, out = _pipeline("tiny")
    assert res4["ran"] == ["param_counts"] and len(list(runs.glob("param_counts.old-*"))) == 1, out


def _real_data_profile(tmp_path, root: Path) -> Path:
    raw = yaml.safe_load((study.profiles_dir() / "paper.yaml").read_text())
    raw["data"]["root"] = str(root)
    path = tmp_path / f"paper_{root.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_real_data_is_fingerprinted_by_its_caption_files_not_its_place(tmp_path):
    root = tmp_path / "clotho_here"
    csvs = root / "CLOTHO_v2.1" / "clotho_csv_files"
    csvs.mkdir(parents=True)
    for split in ("development", "validation", "evaluation"):
        (csvs / f"clotho_captions_{split}.csv").write_text(
            "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n" + f"{split}_0.wav,a,b,c,d,e\n")
    fp = lambda root: {r.name: r.param_hash() for r in study.plan_runs(study.load_profile(_real_data_profile(tmp_path, root)))}
    here = fp(root)
    shutil.copytree(root, tmp_path / "clotho_there")
    assert fp(tmp_path / "clotho_there") == here
    (csvs / "clotho_captions_evaluation.csv").write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\nevaluation_0.wav,a,b,c,d,changed\n")
    changed = {n for n, h in fp(root).items() if h != here[n]}
    assert changed == set(here) - {"param_counts"}  # every run that reads the data
