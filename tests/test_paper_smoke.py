"""The paper profile at its own scale on the CPU: `aacnb reproduce --profile paper --smoke`, all 33 runs.

The paper's architectures at full size (CNN14, Wavegram-Logmel-CNN14, AST at stride 16, BERT-base, BERT-medium,
RoBERTa-base, the captioners with a 4,368-entry vocabulary), its hyper-parameters, every run of the study and every
table, on a handful of synthetic clips and one or two optimiser steps a run (`aacnb.profile.smoke_profile`). It fails
on the shape, dtype, config, disk and memory errors that the GPU run would hit after hours. About 10-15 minutes on
2 cores; deselect with `-m "not paper_smoke"` (it is also `slow`, so `make test-fast` skips it; `make test` runs it).
"""
import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from aacnb import study


def _paper_raw():
    return yaml.safe_load((study.profiles_dir() / "paper.yaml").read_text())


def test_smoke_profile_keeps_every_paper_setting_it_does_not_shrink(tmp_path):
    # a setting added to the paper profile (here two TrainConfig fields) reaches the smoke run unchanged
    raw = _paper_raw()
    raw["captioning"]["xe"].update(weight_decay=1e-6, max_grad_norm=1.0)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(raw))
    paper = study.load_profile(path)
    sm = study.smoke_profile(paper)
    assert sm.name == "paper-smoke" and sm.device == "cpu" and sm.data.synthetic and sm.data.train_items == 2
    assert sm.captioning.xe["weight_decay"] == 1e-6 and sm.captioning.xe["max_grad_norm"] == 1.0
    shrunk = {"epochs", "batch_size", "amp"}
    for a, b in ((sm.captioning.xe, paper.captioning.xe), (sm.captioning.scst, paper.captioning.scst),
                 (sm.retrieval.pretrain, paper.retrieval.pretrain), (sm.retrieval.finetune, paper.retrieval.finetune),
                 (sm.feature_extractor.train, paper.feature_extractor.train)):
        assert {k: v for k, v in a.items() if k not in shrunk} == {k: v for k, v in b.items() if k not in shrunk}
        assert a["amp"] == "off" and a["batch_size"] == 2
    no_weights = not any(ok for _, ok, _ in study.weight_checks(paper))  # the case on the project's machines
    for a, b in zip(sm.retrieval.systems, paper.retrieval.systems):
        assert (a.name, a.audio, a.text, a.paper, a.freeze_text) == (b.name, b.audio, b.text, b.paper, b.freeze_text)
        if no_weights:
            assert a.pretrained is False and "random init" in a.note, a.note
    for a, b in zip(sm.captioning.systems, paper.captioning.systems):
        assert (a.decoder, a.num_layers, a.seed, a.overrides) == (b.decoder, b.num_layers, b.seed, b.overrides)
    for f in ("beam_size", "max_len", "label_smoothing", "scheduled_sampling", "vocab_min_count"):
        assert getattr(sm.captioning, f) == getattr(paper.captioning, f), f
    assert sm.retrieval.embed_dim == paper.retrieval.embed_dim
    assert sm.captioning.vocab_min_size == paper.param_counts.vocab_size == 4368
    assert "meteor" not in sm.captioning.metrics and paper.captioning.metrics is None  # the paper scores everything
    # the same DAG, plus the run that generates the corpus
    assert [r.name for r in study.plan_runs(sm)] == ["corpus"] + [r.name for r in study.plan_runs(paper)]


def test_paper_smoke_dry_run_lists_the_33_runs_and_writes_nothing(capsys):
    assert study.cli_reproduce(["--profile", "paper-smoke", "--dry-run"]) == 0  # = --profile paper --smoke
    out = capsys.readouterr().out
    assert "# dry run: 33 runs for profile paper-smoke" in out and "ret_ast_bertb_finetune" in out
    assert not Path(study.reports_root()).exists() and not Path(study.data_root()).exists()


def test_train_subset_is_seeded_and_keeps_small_datasets_whole():
    data = list(range(10))
    a, b = study.train_subset(data, 3, seed=1), study.train_subset(data, 3, seed=1)
    assert len(a) == 3 and list(a) == list(b) and list(a) == sorted(a)
    assert study.train_subset(data, None) is data and study.train_subset(data, 10) is data


def _csv(path):
    with open(path, newline="") as f:
        return {r.get("system") or r.get("model"): r for r in csv.DictReader(f)}


@pytest.fixture
def big_files_removed():
    "The run leaves ~9 GB of best.pt files; pytest keeps the last three tmp folders, so they go at the end."
    yield
    for f in Path(study.reports_root()).glob("runs/*/*/train/*.pt"):
        f.unlink()


@pytest.mark.slow
@pytest.mark.paper_smoke
def test_paper_profile_smoke_run_end_to_end(capsys, big_files_removed):
    rc = study.cli_reproduce(["--profile", "paper", "--smoke"])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    p = study.load_profile(Path(study.reports_root()) / "runs" / "paper-smoke" / "profile.yaml")
    runs = study.plan_runs(p)
    assert len(runs) == 33
    root = study.runs_root(p)
    for r in runs:
        assert study.run_status(r, root) == "complete", r.name
    rep = Path(study.reports_root()) / "paper-smoke"
    for n in (1, 2, 3, 4):
        assert (rep / f"table{n}.md").stat().st_size > 100 and (rep / study.FIGURES[n]).stat().st_size > 1000
    assert "Table 4" in (rep / "report.html").read_text()

    # the models trained are the paper's: their sizes equal the paper configurations built from their configs
    t1 = _csv(rep / "table1.csv")
    for label in ("two-layer Transformer", "four-layer Transformer", "one-layer GRU (Attention)"):
        assert float(t1[label]["params_m_ours"]) == pytest.approx(float(t1[label]["params_m_paper_config"]), abs=0.01)
    t2 = _csv(rep / "table2.csv")
    for label in ("WLCNN14 + BERT-base", "CNN14 + BERT-medium", "CNN14 + BERT-base", "CNN14 + RoBERTa-base",
                  "AST + BERT-base"):
        # the runs count every parameter, the paper configuration only trainable ones (PANNs' fixed STFT and
        # mel kernels, 1.05 M in CNN14's front end, are parameters that never train)
        ours, paper_cfg = float(t2[label]["params_m_ours"]), float(t2[label]["params_m_paper_config"])
        assert 0 <= ours - paper_cfg < 1.2, (label, ours, paper_cfg)
    ft = json.loads((root / "ret_cnn14_robertab_finetune" / "metrics.json").read_text())
    assert ft["build"]["text"] == "roberta-base" and ft["build"]["tokenizer"] == "bert-base"

    # every table row that the smoke run computes holds a number
    t4 = _csv(rep / "table4.csv")
    for s in [s.name for s in p.retrieval.systems] + [f"ensemble {e.name}" for e in p.retrieval.ensembles]:
        assert 0.0 <= float(t4[s]["r10"]) <= 100.0, s
    t3 = _csv(rep / "table3.csv")
    for s in [s.name for s in p.captioning.systems] + [f"ensemble {e.name}" for e in p.captioning.ensembles]:
        assert float(t3[s]["cider_d_xe"]) >= 0 and float(t3[s]["cider_d_scst"]) >= 0, s
        assert t3[s]["meteor_xe"] == "" and float(t3[s]["bleu_4_scst"]) >= 0, s  # METEOR skipped, as documented
    vocab = json.loads((root / "cap_gru_s0_xe" / "vocab.json").read_text())["itos"]
    assert len(vocab) == 4368

    # time and memory per run and stage, for the README
    res = json.loads((rep / "resources.json").read_text())
    assert len([r for r in res["runs"] if r["run"] != "report"]) == 33
    assert all(r["seconds"] > 0 and r["peak_rss_mb"] > 100 for r in res["runs"])
    stages = {s["stage"]: s for s in res["stages"]}
    assert stages["retrieval pre-train"]["runs"] == 5 and stages["captioner SCST"]["runs"] == 6
    assert stages["retrieval fine-tune"]["peak_rss_mb"] > 2000  # a BERT-base bi-encoder with its Adam state
    assert not list(root.glob("ret_*/train/last.pt"))         # 2.3 GB each: removed once the run is complete
