"""kill -9 in the middle of each stage of the study, then rerun: the finished runs equal an uninterrupted run's (issue #19).

The study runs as a user runs it (`aacnb.study.run_pipeline` in its own process, each run a notebook executed
by papermill in a kernel of its own) on a profile smaller than tests/test_study.py's: 20 + 8 + 4 synthetic clips,
one retrieval system, the feature extractor, one captioner; tables 3 and 4 (every training stage), no report.
`tests/kill_hook/sitecustomize.py` kills a process with SIGKILL at a chosen checkpoint; one interrupted
study takes these kills in turn, each followed by a rerun that resumes:

1. retrieval: the pre-training kernel, right after its epoch-1 `last.pt` (of 2 epochs);
2. the pipeline itself: the driver and its kernel, as the driver is about to mark that run complete;
3. features: the feature extraction kernel, right after the first batch was flushed to `features.h5.partial`;
4. captioning XE, right after its epoch-1 `last.pt`;
5. SCST, right after its epoch-1 `last.pt`;

then a last rerun finishes the study. Every output of every run (checkpoint weights, optimiser and RNG states,
metrics.json, predictions, logs, test similarities, the feature cache's arrays) must equal, bit for bit, an
uninterrupted study's; bookkeeping (markers, timings, executed notebooks) is left out of the comparison.
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from toy_study import toy_profile

HOOK = Path(__file__).parent / "kill_hook"
RUNS = ["corpus", "ret_cnn14_bertm_pretrain", "ret_cnn14_bertm_finetune", "fx_pretrain", "features",
        "cap_transformer2_s0_xe", "cap_transformer2_s0_scst"]
DRIVER = "import sys; from aacnb import study; study.run_pipeline(sys.argv[1], tables=[3, 4], report=False)"


def _profile(root: Path) -> Path:
    return toy_profile(root / "profile.yaml", "killtest", str(root / "corpus"),
                       description="kill -9 and resume: every training stage, a few steps each")


def _study(root: Path, kill: str = "") -> tuple[int, str, list[str]]:
    "Run the study of `root`'s profile in a process of its own: (exit code, output, the kills the hook logged)."
    log = root / "kills.log"
    env = dict(os.environ, AACNB_REPORTS=str(root / "reports"), AACNB_DATA=str(root / "data"),
               PYTHONHASHSEED="0", AACNB_KILL_AT=kill, AACNB_KILL_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(HOOK)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    before = log.read_text().splitlines() if log.exists() else []
    p = subprocess.run([sys.executable, "-c", DRIVER, str(root / "profile.yaml")], env=env, capture_output=True,
                       text=True, timeout=900, start_new_session=True)
    after = log.read_text().splitlines() if log.exists() else []
    return p.returncode, p.stdout + p.stderr, after[len(before):]


def _plain(x, root: str):
    "Checkpoint / JSON contents as comparable plain data: tensors as (dtype, shape, bytes), `root` as <ROOT>."
    if isinstance(x, torch.Tensor):
        return ("tensor", str(x.dtype), tuple(x.shape), x.detach().cpu().contiguous().numpy().tobytes())
    if isinstance(x, np.ndarray):
        return ("array", str(x.dtype), x.shape, x.tobytes())
    if isinstance(x, dict):
        return {k: _plain(v, root) for k, v in x.items() if k != "provenance"}  # commit, time, host
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v, root) for v in x)
    if isinstance(x, str):
        return x.replace(root, "<ROOT>")
    return x


BOOKKEEPING = {"COMPLETE.json", "STARTED.json", "resources.json"}  # what ran when, and how long it took


def _outputs(root: Path) -> dict:
    "Every result file of every run under `root`, as comparable data."
    runs, out = root / "reports" / "runs" / "killtest", {}
    for f in sorted(p for p in runs.rglob("*") if p.is_file()):
        rel = f.relative_to(runs).as_posix()
        if f.name in BOOKKEEPING or f.suffix == ".ipynb":
            continue
        if f.suffix == ".pt":
            out[rel] = _plain(torch.load(f, map_location="cpu", weights_only=False), str(root))
        elif f.suffix == ".h5":
            with h5py.File(f, "r") as h:
                out[rel] = {"attrs": {k: _plain(str(v), str(root)) for k, v in h.attrs.items() if k != "provenance"},
                            "items": {k: _plain(h["features"][k][()], str(root)) for k in h["features"]}}
        elif f.suffix == ".npy":
            out[rel] = _plain(np.load(f), str(root))
        elif f.suffix == ".json":
            out[rel] = _plain(json.loads(f.read_text()), str(root))
        else:
            out[rel] = f.read_text().replace(str(root), "<ROOT>")
    return out


def _executed(root: Path, run: str) -> str:
    "The text of a run's executed notebook (its outputs say whether training resumed)."
    return (root / "reports" / "runs" / "killtest" / f"{run}.ipynb").read_text()


@pytest.mark.slow
def test_kill_9_in_each_stage_then_rerun_gives_the_uninterrupted_results(tmp_path):
    ref, cut = tmp_path / "uninterrupted", tmp_path / "interrupted"
    _profile(ref), _profile(cut)
    rc, out, kills = _study(ref)
    assert rc == 0 and kills == [], out
    runs = cut / "reports" / "runs" / "killtest"

    # 1. retrieval: the pre-training kernel dies right after its epoch-1 checkpoint
    rc, out, kills = _study(cut, "save:ret_cnn14_bertm_pretrain/train/last.pt:1")
    assert rc != 0 and len(kills) == 1 and "ret_cnn14_bertm_pretrain/train/last.pt" in kills[0], out
    assert torch.load(runs / "ret_cnn14_bertm_pretrain/train/last.pt", weights_only=False)["epoch"] == 1
    assert not (runs / "ret_cnn14_bertm_pretrain" / "COMPLETE.json").exists()

    # 2. the pipeline itself: the rerun resumes pre-training at epoch 2; the driver (and its kernel) die as it is
    #    about to mark the run complete
    rc, out, kills = _study(cut, "marker:ret_cnn14_bertm_pretrain")
    assert rc == -9 and len(kills) == 1 and "marker" in kills[0], out
    assert "resuming" in _executed(cut, "ret_cnn14_bertm_pretrain")
    assert (runs / "ret_cnn14_bertm_pretrain" / "metrics.json").exists()
    assert not (runs / "ret_cnn14_bertm_pretrain" / "COMPLETE.json").exists()

    # 3. features: the extraction dies after its first batch (16 of 20 clips) reached the partial cache
    rc, out, kills = _study(cut, "flush:features/features.h5.partial:1")
    assert rc != 0 and len(kills) == 1 and "(16 items)" in kills[0], out
    assert (runs / "features" / "features.h5.partial").exists() and not (runs / "features" / "features.h5").exists()

    # 4. and 5. the captioner: XE, then SCST, each killed after its epoch-1 checkpoint
    for run in ("cap_transformer2_s0_xe", "cap_transformer2_s0_scst"):
        rc, out, kills = _study(cut, f"save:{run}/train/last.pt:1")
        assert rc != 0 and len(kills) == 1 and f"{run}/train/last.pt" in kills[0], out
        assert not (runs / run / "COMPLETE.json").exists()

    rc, out, kills = _study(cut)
    assert rc == 0 and kills == [], out
    for run in ("cap_transformer2_s0_xe", "cap_transformer2_s0_scst"):
        assert "resuming" in _executed(cut, run), run
    assert all((runs / r / "COMPLETE.json").exists() for r in RUNS)
    assert not list(runs.glob("*.old-*")) and not list(runs.rglob("*.partial"))  # resumed in place

    want, got = _outputs(ref), _outputs(cut)
    assert sorted(got) == sorted(want)
    assert {k for k in want if k.endswith(".pt")} >= {"cap_transformer2_s0_scst/train/swa.pt",
                                                      "ret_cnn14_bertm_pretrain/train/best.pt"}
    differ = [k for k in want if got[k] != want[k]]
    assert differ == [], f"differ after kill -9 and resume: {differ}"
