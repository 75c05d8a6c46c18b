"""The experiment notebooks run by hand, and the report a reader opens.

By hand means papermill with only what a person would pass: a small corpus, and the run folders a notebook
strictly needs from upstream runs (made here first, by hand too, at their default, tiny-profile settings).
"""
import json
import re
import sys
from pathlib import Path

import papermill as pm
import pytest
import yaml

from aacnb import study
from aacnb.runs import IPCKernelManager

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "nbs" / "experiments"
RUN_NOTEBOOKS = sorted(p.name for p in EXPERIMENTS.glob("*.ipynb") if p.name != "report.ipynb")


def _same(a, b):
    return type(a) is type(b) and a == b


# -- what the notebooks declare -------------------------------------------------------------------------------
@pytest.mark.parametrize("notebook", RUN_NOTEBOOKS)
def test_defaults_are_the_tiny_profiles_run_named_by_run_name(notebook):
    # run as it stands, a notebook does what `aacnb reproduce --profile tiny` does for its default run
    declared = study.declared_parameters(notebook)
    run = study.planned_run(study.load_profile("tiny"), notebook, declared["run_name"])
    assert run is not None, (notebook, declared["run_name"])
    differ = {k: (declared.get(k), v) for k, v in run.params.items()
              if k not in run.places and not _same(declared.get(k), v)}
    assert differ == {}, (notebook, differ)


@pytest.mark.parametrize("notebook", sorted(p.name for p in EXPERIMENTS.glob("*.ipynb")))
def test_papermill_describes_every_parameter_with_its_type(notebook):
    described = pm.inspect_notebook(str(EXPERIMENTS / notebook))
    # papermill skips a line it cannot parse (an `=` in a comment, `float | None`): every parameter must be listed
    assert set(described) == set(study.declared_parameters(notebook)), notebook
    untyped = [n for n, p in described.items() if p["inferred_type_name"] in ("None", "Unknown type")]
    assert untyped == [], (notebook, untyped)


# -- the profile's values for what a caller left --------------------------------------------------------------
def test_the_runners_parameters_reach_the_notebook_unchanged(tmp_path):
    # the runner passes every planned parameter; profile_parameters must not alter one (the runs' fingerprints and
    # the committed tables depend on it)
    p = study.load_profile("tiny")
    for run in study.plan_runs(p):
        given = {**study.declared_parameters(run.notebook), **run.params, "run_name": run.name,
                 "out_dir": str(tmp_path / run.name)}
        for k in run.places:   # upstream run folders the runner would have made by now
            if k not in ("profile", "data_root"):
                for folder in given[k].split(","):
                    Path(folder).mkdir(parents=True, exist_ok=True)
        got = study.profile_parameters(run.notebook, given, say=lambda s: None)
        assert {k: v for k, v in got.items() if not _same(v, given[k])} == {}, run.name


def test_by_hand_the_profile_fills_what_was_left_and_the_caller_wins(tmp_path):
    raw = yaml.safe_load((study.profiles_dir() / "tiny.yaml").read_text())
    raw.update(name="mine", num_threads=1)
    raw["retrieval"]["pretrain"] = dict(raw["retrieval"]["pretrain"], epochs=2, lr=5e-4)
    raw["retrieval"]["systems"][2]["overrides"] = {"width": 0.0625, "spec_augment": False}
    prof = tmp_path / "mine.yaml"
    prof.write_text(yaml.safe_dump(raw))
    said = []
    given = dict(study.declared_parameters("retrieval.ipynb"), profile=str(prof), data_root=str(tmp_path / "c"),
                 seed=3, out_dir=str(tmp_path / "out"))
    got = study.profile_parameters("retrieval.ipynb", given, said.append)
    assert json.loads(got["train"])["epochs"] == 2 and json.loads(got["train"])["lr"] == 5e-4
    assert json.loads(got["overrides"])["width"] == 0.0625 and got["num_threads"] == 1
    assert got["seed"] == 3 and got["data_root"] == str(tmp_path / "c")      # set by hand: kept
    assert (tmp_path / "out").is_dir() and "set by the caller: profile, out_dir, data_root, seed" in said[0]
    # a run folder the plan names but nobody made: the error says which run makes it
    with pytest.raises(FileNotFoundError, match="--run ret_cnn14_bertb_pretrain"):
        study.profile_parameters("retrieval.ipynb", dict(given, run_name="ret_cnn14_bertb_finetune"), said.append)


# -- every experiment notebook, by hand ----------------------------------------------------------------------
def _by_hand(notebook: str, folder: Path, **parameters) -> Path:
    "papermill NOTEBOOK OUT --cwd FOLDER -p ...: only `parameters`; the run's files land in `folder`."
    folder.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(EXPERIMENTS / notebook), str(folder / notebook), parameters=parameters,
                        kernel_name="python3", progress_bar=False, cwd=str(folder), language="python",
                        kernel_manager_class=IPCKernelManager)
    return folder


@pytest.mark.slow
def test_every_experiment_notebook_runs_by_hand_with_its_defaults(tmp_path):
    corpus = str(tmp_path / "corpus")
    small = dict(n_clips=20, n_audiocaps=8, n_macs=4)   # the "small corpus": tiny's clips, fewer of them
    made = _by_hand("make_corpus.ipynb", tmp_path / "corpus_run", data_root=corpus, **small)
    assert study.clotho_splits(corpus)["test"], "no evaluation clips"
    ran = {"make_corpus.ipynb": made}
    ran["param_counts.ipynb"] = _by_hand("param_counts.ipynb", tmp_path / "param_counts")
    ret = ran["retrieval.ipynb"] = _by_hand("retrieval.ipynb", tmp_path / "retrieval", data_root=corpus)
    ran["retrieval_ensemble.ipynb"] = _by_hand("retrieval_ensemble.ipynb", tmp_path / "ret_ens", members=str(ret))
    feats = ran["features.ipynb"] = _by_hand("features.ipynb", tmp_path / "features", data_root=corpus,
                                             extractor=str(ret))
    xe = ran["captioning.ipynb"] = _by_hand("captioning.ipynb", tmp_path / "xe", data_root=corpus,
                                            features=str(feats))
    # the ensemble needs a member after SCST too: the same notebook, its SCST stage started from the XE run
    scst = _by_hand("captioning.ipynb", tmp_path / "scst", data_root=corpus, features=str(feats),
                    run_name="cap_transformer2_s0_scst", init_from=str(xe))
    ran["caption_ensemble.ipynb"] = _by_hand("caption_ensemble.ipynb", tmp_path / "cap_ens", data_root=corpus,
                                             features=str(feats), members_xe=str(xe), members_scst=str(scst))
    assert sorted(ran) == RUN_NOTEBOOKS
    for notebook, folder in ran.items():
        res = json.loads((folder / "metrics.json").read_text())
        assert res["profile"] == "tiny" and res["metrics"], notebook
    ens = json.loads((ran["caption_ensemble.ipynb"] / "metrics.json").read_text())
    assert set(ens["metrics"]) == {"xe", "scst"}
    assert json.loads((scst / "metrics.json").read_text())["stage"] == "scst"   # run_name's run: SCST's settings
    log = (ret / "log.csv").read_text().splitlines()
    assert sum(",epoch," in line for line in log) == 4     # tiny's pre-training: 4 epochs
    report = _by_hand("report.ipynb", tmp_path / "report")  # the tiny study's report, none of its runs made here
    assert (Path(study.reports_root()) / "tiny" / "table4.md").exists() and (report / "report.ipynb").exists()


# -- the report a reader opens --------------------------------------------------------------------------------
def test_the_published_report_opens_on_table_1_and_carries_no_build_path():
    html = Path(study.write_report("tiny")).read_text(encoding="utf-8")
    notebook = (Path(study.reports_root()) / "tiny" / "report.ipynb").read_text(encoding="utf-8")
    for text in (html, notebook):
        assert str(ROOT) not in text and sys.prefix not in text   # the checkout, the virtualenv
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    assert title != "Notebook" and "Tables 1-4" in title
    headings = re.findall(r"<h([1-6])[^>]*>(.*?)<", html)
    assert headings[0][0] == "1" and headings[1][1].startswith("Table 1"), headings[:3]
    before_table1 = html[html.index("<body"): html.index(headings[1][1])]
    assert "<table" not in before_table1 and "<pre>" not in before_table1    # no YAML, no printout above it
    assert 'data-mime-type="application/vnd.jupyter.stderr"' not in html  # no warning box anywhere
    order = [h for _, h in headings]
    assert order.index("Provenance: the profile") > order.index("Table 4: text-to-audio retrieval")
    assert "curves_captioning.png" in html and "table1.png" not in html
