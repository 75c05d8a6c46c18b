"""The study: profiles, the run plan, papermill notebooks, the runner (skip / force / failure) and the tables.

The smoke test runs the same pipeline as `aacnb reproduce --profile tiny` on a much smaller profile (a 30-clip
corpus, one epoch per run, one system per table) and checks the four tables come out with computed numbers.
"""
import copy
import csv
import io
import json
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import yaml

from aacnb import runs, study

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "nbs" / "experiments"


def _raw(name="tiny"):
    return yaml.safe_load((study.profiles_dir() / f"{name}.yaml").read_text())


def _write(tmp_path, raw, name="p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


# -- profiles -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "paper"])
def test_packaged_profiles_load_and_validate(name):
    p = study.load_profile(name)
    assert p.name == name and p.source.endswith(f"{name}.yaml")
    assert len(p.retrieval.systems) == 5 and len(p.retrieval.ensembles) == 4
    assert len(p.captioning.systems) == 6 and len(p.captioning.ensembles) == 3
    # every system stands for a row of the paper's tables
    assert {s.paper for s in p.retrieval.systems} == set(study.PAPER_TABLES["table2"])
    assert {s.paper for s in p.captioning.systems} == set(study.PAPER_TABLES["table1"])


def test_paper_profile_has_the_reports_hyperparameters():
    p = study.load_profile("paper")
    assert p.retrieval.pretrain["lr"] == 1e-4 and p.retrieval.finetune["lr"] == 2e-5
    assert p.retrieval.pretrain["epochs"] == 20 and p.retrieval.pretrain["batch_size"] == 128
    assert p.captioning.xe == {"epochs": 25, "lr": 5e-4, "batch_size": 64, "warmup_steps": 3000,
                               "schedule": "exponential", "final_lr": 5e-7,
                               # the authors' config where the report is silent
                               "weight_decay": 1e-6, "max_grad_norm": 1.0, "swa_epochs": 5}
    assert p.captioning.scst == {"epochs": 100, "lr": 5e-5, "batch_size": 64, "schedule": "constant",
                                 "max_grad_norm": 1.0, "swa_epochs": 5}
    assert p.captioning.beam_size == 3 and p.captioning.label_smoothing == 0.1
    assert all(s.pretrained is True for s in p.retrieval.systems) and not p.data.synthetic
    # where the report is silent: the authors' code (see the fidelity table)
    c = p.captioning
    assert (c.select, c.scst_items, c.scheduled_sampling_scheme, c.max_len, c.length_normalize) == \
        ("swa", "pairs", "stepwise", 20, True)
    assert p.data.train_crop_seconds == 10 and p.feature_extractor.text == "bert-medium"
    assert all(spec["amp"] is False for spec in (p.retrieval.pretrain, p.retrieval.finetune, p.feature_extractor.train))
    assert all(s.overrides.get("spec_augment", False) is False and s.overrides["text_max_length"] == 30
               for s in [*p.retrieval.systems, p.feature_extractor])
    assert all("max_scale" in s.overrides and s.overrides["max_scale"] is None   # the temperature free, as theirs
               for s in [*p.retrieval.systems, p.feature_extractor])
    assert p.retrieval.monitor == "r_geomean"


def test_select_swa_needs_averaged_epochs(tmp_path):
    raw = _raw()
    raw["captioning"]["select"] = "swa"
    raw["captioning"]["scst"].pop("swa_epochs", None)
    with pytest.raises(study.ProfileError, match="swa_epochs"):
        study.load_profile(_write(tmp_path, raw))


@pytest.mark.parametrize("patch, words", [
    (lambda r: r["captioning"]["systems"][2].update(decoder="lstm"), ["captioning.systems[2]", "decoder", "lstm"]),
    (lambda r: r["data"].update(n_clipz=3), ["data", "n_clipz"]),
    (lambda r: r["retrieval"]["systems"][0].update(audio="vggish"), ["retrieval.systems[0]", "audio", "vggish"]),
    (lambda r: r["retrieval"]["finetune"].update(lr=-1), ["retrieval", "finetune", "lr"]),
    (lambda r: r["captioning"]["xe"].update(learning_rate=1e-3), ["captioning.xe", "learning_rate"]),
    (lambda r: r["retrieval"]["ensembles"][0]["members"].append("nope"), ["retrieval.ensembles[0].members", "nope"]),
    (lambda r: r.update(device="tpu"), ["device", "tpu"]),
])
def test_a_bad_field_is_named_in_the_error(tmp_path, patch, words):
    raw = _raw()
    patch(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(study.ProfileError) as e:
        study.load_profile(path)
    msg = str(e.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, (w, msg)


def test_missing_profile_lists_the_packaged_ones():
    with pytest.raises(study.ProfileError, match="tiny"):
        study.load_profile("no-such-profile")


# -- the experiment notebooks ---------------------------------------------------------------------------------
def test_every_experiment_notebook_keeps_its_parameters_cell():
    nbs = sorted(EXPERIMENTS.glob("*.ipynb"))
    assert {p.stem for p in nbs} >= {"make_corpus", "param_counts", "retrieval", "retrieval_ensemble", "features",
                                     "captioning", "caption_ensemble", "report"}
    for nb in nbs:
        params = pm.inspect_notebook(str(nb))
        assert "profile" in params, nb
        tagged = [c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, nb
        # flat values, each typed and commented (papermill --help-notebook shows both); `typing` for the types
        for line in tagged[0].source.splitlines():
            if line.strip() and not line.startswith("from typing import"):
                assert "=" in line and "#" in line, (nb.name, line)
        assert all(p["inferred_type_name"] != "None" and p["help"] for p in params.values()), nb.name


@pytest.mark.parametrize("profile", ["tiny", "paper"])
def test_every_planned_parameter_is_declared_by_its_notebook(profile):
    # papermill injects undeclared names silently; a typo there would leave a run on the notebook's default
    for run in study.plan_runs(study.load_profile(profile)):
        declared = set(pm.inspect_notebook(str(EXPERIMENTS / run.notebook)))
        given = set(run.params) | {"run_name", "out_dir"}
        assert given <= declared, (run.name, sorted(given - declared))


def test_plan_covers_the_report():
    runs = study.plan_runs(study.load_profile("tiny"))
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    for i, r in enumerate(runs):
        assert all(names.index(d) < i for d in r.deps), r.name
    for s in ("wlcnn14_bertb", "cnn14_bertm", "cnn14_bertb", "cnn14_robertab", "ast_bertb"):
        assert f"ret_{s}_pretrain" in names and f"ret_{s}_finetune" in names
    assert [n for n in names if n.startswith("ret_ens_")] == [f"ret_ens_system{i}" for i in (1, 2, 3, 4)]
    assert sum(n.startswith("cap_") and n.endswith("_scst") for n in names) == 6
    assert [n for n in names if n.startswith("cap_ens_")] == [f"cap_ens_system{i}" for i in (2, 3, 4)]
    t1 = [r.name for r in study.select_runs(runs, [1])]
    assert t1 == ["param_counts"]
    t3 = [r.name for r in study.select_runs(runs, [3])]
    assert "features" in t3 and "fx_pretrain" in t3 and not any(n.startswith("ret_") for n in t3)


# -- dry run --------------------------------------------------------------------------------------------------
def test_dry_run_lists_runs_and_checks_data_and_weights(capsys):
    rc = study.cli_reproduce(["--profile", "paper", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 3  # the real data and weights are not on this machine
    assert "ret_wlcnn14_bertb_pretrain" in out and "cap_ens_system4" in out and "would run" in out
    assert "[MISSING] Clotho development captions" in out and "aacnb download" in out
    assert "[MISSING] weights cnn14" in out and "[MISSING] weights bert-base" in out
    assert not (Path(study.reports_root()) / "runs").exists()  # a dry run writes nothing

    rc = study.cli_reproduce(["--profile", "tiny", "--dry-run", "--table", "4"])
    out = capsys.readouterr().out.split("# dry run")[1]
    assert rc == 0 and "ret_ens_system1" in out and "cap_" not in out
    assert "[ok] embedded corpus" in out and "[ok] weights minilm" in out


def test_dry_run_counts_missing_clotho_audio(tmp_path):
    raw = _raw("paper")
    raw["data"]["root"] = str(tmp_path / "d")
    c = tmp_path / "d" / "CLOTHO_v2.1"
    for split in ("development", "validation", "evaluation"):
        (c / "clotho_csv_files").mkdir(parents=True, exist_ok=True)
        (c / "clotho_audio_files" / split).mkdir(parents=True, exist_ok=True)
        (c / "clotho_csv_files" / f"clotho_captions_{split}.csv").write_text(
            "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
            + "".join(f"{split}_{i}.wav,a,b,c,d,e\n" for i in range(4)))
        (c / "clotho_audio_files" / split / f"{split}_0.wav").write_bytes(b"RIFF")
    checks = {w: (ok, d) for w, ok, d in study.data_checks(study.load_profile(_write(tmp_path, raw)))}
    ok, detail = checks["Clotho evaluation audio"]
    assert not ok and "1/4 clips present" in detail and "evaluation_1.wav" in detail
    # AudioCaps (the paper pre-trains on it): missing caption files are named; audio is counted by YouTube id
    ok, detail = checks["AudioCaps val captions"]
    assert not ok and "val.csv missing" in detail and "aacnb download --help" in detail
    a = tmp_path / "d" / "AUDIOCAPS"
    (a / "csv_files").mkdir(parents=True)
    (a / "audio" / "train").mkdir(parents=True)
    (a / "csv_files" / "train.csv").write_text("audiocap_id,youtube_id,start_time,caption\n1,abc,0,a\n2,xyz,0,b\n")
    (a / "audio" / "train" / "abc.flac").write_bytes(b"fLaC")
    checks = {w: (ok, d) for w, ok, d in study.data_checks(study.load_profile(_write(tmp_path, raw)))}
    ok, detail = checks["AudioCaps train audio"]
    assert not ok and "1/2 clips present" in detail and "xyz" in detail


# -- the runner -----------------------------------------------------------------------------------------------
def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    p = nbformat.v4.new_code_cell('profile = ""  # profile\nrun_name = ""  # run\nout_dir = "."  # folder\nx = 1  # value')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [nbformat.v4.new_code_cell(b) for b in body]
    nbformat.write(nb, path)


@pytest.mark.slow
def test_a_failed_run_names_its_notebook_and_cell_and_leaves_no_marker(tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    exp.mkdir()
    _notebook(exp / "boom.ipynb", ["y = x + 1", "raise ValueError(f'bad value {y}')"])
    _notebook(exp / "fine.ipynb", ["from aacnb import study",
                                   "study.save_run_result(out_dir, 'toy', {'x': x}, run_name=run_name)"])
    monkeypatch.setattr(runs, "experiments_dir", lambda: exp)  # where execute_run looks them up
    root = tmp_path / "runs"
    ok = study.Run("fine", "fine.ipynb", {"x": 3})
    study.execute_run(ok, root)
    assert study.run_status(ok, root) == "complete"
    assert json.loads((root / "fine" / "metrics.json").read_text())["metrics"] == {"x": 3}
    assert study.run_status(study.Run("fine", "fine.ipynb", {"x": 4}), root) == "stale"
    bad = study.Run("boom", "boom.ipynb", {"x": 1})
    with pytest.raises(study.RunFailed) as e:
        study.execute_run(bad, root)
    msg = str(e.value)
    assert str(root / "boom.ipynb") in msg and "ValueError" in msg and "bad value 2" in msg and "raise ValueError" in msg
    assert e.value.cell == 3 and (root / "boom.ipynb").exists()  # in the executed copy (papermill injects a cell)
    assert study.run_status(bad, root) == "missing" and not list(root.glob(".*.tmp*"))


def _smoke_profile(tmp_path) -> Path:
    raw = {
        "name": "smoke", "description": "smoke test: 30-clip corpus, one epoch, one system per table",
        "device": "cpu", "seed": 0, "num_threads": 1,
        "data": {"synthetic": True, "root": str(tmp_path / "corpus"), "n_clips": 30, "n_audiocaps": 12,
                 "n_macs": 6, "clip_seconds": [3.0, 3.0]},
        "retrieval": {"embed_dim": 32, "pretrain": {"epochs": 1, "lr": 1e-3, "batch_size": 16},
                      "finetune": {"epochs": 1, "lr": 1e-3, "batch_size": 32}, "eval_batch_size": 32,
                      "systems": [{"name": "cnn14_bertm", "paper": "CNN14 + BERT-medium", "audio": "cnn14",
                                   "text": "bert-tiny", "overrides": {"width": 0.0625}, "note": "smoke"}],
                      "ensembles": [{"name": "system1", "members": ["cnn14_bertm"], "paper": "Ensemble"}]},
        "feature_extractor": {"audio": "cnn14", "text": "bert-tiny", "overrides": {"width": 0.0625},
                              "train": {"epochs": 1, "lr": 1e-3, "batch_size": 32}},
        "captioning": {"xe": {"epochs": 2, "lr": 2e-3, "batch_size": 32, "swa_epochs": 2},
                       "scst": {"epochs": 1, "lr": 5e-5, "batch_size": 16, "swa_epochs": 1}, "select": "swa",
                       "beam_size": 2, "max_len": 12,
                       "systems": [{"name": "transformer2_s0", "paper": "two-layer Transformer", "decoder": "transformer",
                                    "num_layers": 2, "seed": 0,
                                    "overrides": {"d_model": 32, "nhead": 4, "dim_feedforward": 64, "enc_hidden": 32}}],
                       "ensembles": [{"name": "system2", "members": ["transformer2_s0"], "paper": "two-layer Transformer x2"}]},
        "param_counts": {"paper_configs": False},
    }
    return _write(tmp_path, raw, "smoke.yaml")


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_smoke_run_end_to_end_then_rerun_skips(tmp_path, capsys):
    prof = _smoke_profile(tmp_path)
    out = io.StringIO()
    res = study.run_pipeline(str(prof), out=out)
    assert res["skipped"] == [] and len(res["ran"]) == 10, out.getvalue()
    rep = Path(study.reports_root()) / "smoke"
    for n in (1, 2, 3, 4):
        assert (rep / f"table{n}.md").stat().st_size > 100 and (rep / study.FIGURES[n]).stat().st_size > 1000
    assert (rep / "report.ipynb").exists() and "Table 4" in (rep / "report.html").read_text()
    runs = Path(study.reports_root()) / "runs" / "smoke"
    for r in res["ran"]:
        assert (runs / f"{r}.ipynb").exists() and (runs / r / study.MARKER).exists() and (runs / r / "metrics.json").exists()
    assert (runs / "cap_transformer2_s0_xe" / "log.csv").exists()

    # the paper's recipe: the SWA average is tested and passed on; an SCST epoch visits (clip, caption) pairs
    n_pairs = sum(len(r.captions) for r in study.clotho_splits(tmp_path / "corpus")["train"])
    for stage in ("xe", "scst"):
        res_ = study.load_run_result(runs / f"cap_transformer2_s0_{stage}")
        assert res_["selected"] == "swa" and study.selected_checkpoint(runs / f"cap_transformer2_s0_{stage}").name == "swa.pt"
    scst_log = _csv(runs / "cap_transformer2_s0_scst" / "log.csv")
    assert int(scst_log[-1]["step"]) == -(-n_pairs // 16), (n_pairs, scst_log[-1])

    # the tables hold computed numbers, with profile, seed and commit per row
    t4 = {r["system"]: r for r in _csv(rep / "table4.csv")}
    for sysname in ("cnn14_bertm", "ensemble system1"):
        assert 0.0 <= float(t4[sysname]["r10"]) <= 100.0 and float(t4[sysname]["r10_paper"]) > 50
        assert t4[sysname]["profile"] == "smoke" and t4[sysname]["commit"]
    t3 = {r["system"]: r for r in _csv(rep / "table3.csv")}
    assert float(t3["transformer2_s0"]["cider_d_xe"]) >= 0 and t3["transformer2_s0"]["cider_d_scst"] != ""
    assert t3["transformer2_s0"]["seed"] == "0" and float(t3["ensemble system2"]["cider_d_scst_paper"]) == 52.4
    t1 = {r["model"]: r for r in _csv(rep / "table1.csv")}
    assert 0 < float(t1["two-layer Transformer"]["params_m_ours"]) < 1
    assert abs(float(t1["two-layer Transformer"]["params_m_paper_config"]) - 10.4) < 0.1  # built from the config
    assert "n/a / 207" in (rep / "table2.md").read_text() or "207" in (rep / "table2.md").read_text()

    # chance levels stand beside the numbers they qualify
    n_test = len(list((tmp_path / "corpus" / "CLOTHO_v2.1" / "clotho_audio_files" / "evaluation").glob("*.wav")))
    assert abs(float(t4["chance: random ranking"]["r1"]) - 100 / n_test) < 1e-9
    assert float(t3["chance: random training caption"]["cider_d_xe"]) >= 0

    # what a user does next, from the command line: caption a file, search a folder (no --extractor: the
    # captioner checkpoint names its frozen feature extractor)
    from aacnb.cli import main as cli
    ev = sorted((tmp_path / "corpus" / "CLOTHO_v2.1" / "clotho_audio_files" / "evaluation").glob("*.wav"))
    capsys.readouterr()
    assert cli(["caption", "--model", str(runs / "cap_transformer2_s0_scst" / "train" / "swa.pt"), "--json",
                str(ev[0])]) == 0
    assert ev[0].name in capsys.readouterr().out
    assert cli(["search", "--model", str(runs / "ret_cnn14_bertm_finetune" / "train" / "best.pt"), "--folder",
                str(ev[0].parent), "--query", "a dog barks", "--top", "3", "--json"]) == 0
    assert ".wav" in capsys.readouterr().out

    # a second call skips every complete run
    res2 = study.run_pipeline(str(prof), out=io.StringIO(), report=False)
    assert res2["ran"] == [] and len(res2["skipped"]) == 10

    # running a run again from scratch gives the same numbers (seeded training, decoding and scoring)
    p = study.load_profile(prof)
    run = next(r for r in study.plan_runs(p) if r.name == "cap_transformer2_s0_xe")
    before = json.loads((runs / run.name / "metrics.json").read_text())
    study.execute_run(run, runs, force=True)
    after = json.loads((runs / run.name / "metrics.json").read_text())
    assert after["metrics"] == before["metrics"] and after["n_params"] == before["n_params"]


def test_fast_cider_d_tokenizes_references_like_the_full_evaluation():
    # Model selection uses the fast CIDEr-D (full=False); the references are raw Clotho sentences with capitals and
    # full stops, the predictions decoded lower-case words. Both must be tokenised alike, as the PTB tokenizer of
    # the full evaluation does, or selection ranks models on a deflated, distorted score.
    refs = [["A dog barks twice.", "The dog is barking, loudly.", "A dog barks in the distance."],
            ["Rain falls on a tin roof.", "Heavy rain is falling.", "Rain falls steadily on a roof."],
            ["A car passes by.", "A car drives past quickly.", "Traffic passes on a road."]]
    preds = ["a dog barks", "rain falls on a roof", "a car passes by"]
    raw = study.caption_scores(preds, refs, full=False)["cider_d"]
    clean = study.caption_scores(preds, [[r.lower().replace(".", "").replace(",", "") for r in rs] for rs in refs],
                                 full=False)["cider_d"]
    assert raw == pytest.approx(clean, abs=1e-12) and raw > 0.5


def test_committed_fidelity_table_is_current():
    # reports/paper/README.md is generated from the profile and aacnb.paper.FIDELITY: it must not drift
    from aacnb.core import project_root
    p = study.load_profile("paper")
    committed = project_root() / "reports" / "paper" / "README.md"
    assert committed.read_text(encoding="utf-8") == study.fidelity_markdown(p), \
        "reports/paper/README.md is stale: run python -c 'from aacnb import study; study.write_fidelity(study.load_profile(\"paper\"))'"
    rows = {r["setting"]: r for r in study.fidelity_rows(p)}
    assert rows["checkpoint tested and passed on"]["profile"] == "swa"
    assert rows["caption length"]["profile"] == "20"
