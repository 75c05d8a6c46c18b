"""The study runner when things go wrong (issue #19, item 6): a run whose kernel dies says so in one line and how
to resume; a profile asking for CUDA on a machine without it is refused before anything runs."""
import dataclasses
import io
import json
from pathlib import Path
from unittest import mock

import pytest
import torch

from aacnb import pipeline, runs
from aacnb.profile import load_profile
from aacnb.runs import Run, RunFailed, execute_run

_KILLER = {"cells": [
    {"id": "params", "cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "run_name = ''\nout_dir = '.'",
     "outputs": [], "execution_count": None},
    {"id": "train", "cell_type": "code", "metadata": {}, "source": "print('training...', flush=True)", "outputs": [],
     "execution_count": None},
    {"id": "die", "cell_type": "code", "metadata": {}, "source": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
     "outputs": [], "execution_count": None}],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                 "language_info": {"name": "python"}},
    "nbformat": 4, "nbformat_minor": 5}


def test_a_killed_kernel_is_one_clear_error(tmp_path):
    # as when the out-of-memory killer takes a run's kernel: no 40-line DeadKernelError, the run named, how to resume
    nbs = tmp_path / "experiments"
    nbs.mkdir()
    (nbs / "killer.ipynb").write_text(json.dumps(_KILLER))
    run = Run(name="cap_victim_xe", notebook="killer.ipynb", params={})
    root = tmp_path / "runs"
    with mock.patch.object(runs, "experiments_dir", lambda: nbs), pytest.raises(RunFailed) as err:
        execute_run(run, root)
    msg = str(err.value)
    assert msg.startswith("run 'cap_victim_xe' died") and "out-of-memory" in msg and "resume" in msg, msg
    assert "\n" not in msg and "Traceback" not in msg
    assert err.value.run == "cap_victim_xe"
    assert (root / "cap_victim_xe.ipynb").exists()          # what it printed before dying is kept
    assert not (root / "cap_victim_xe" / runs.MARKER).exists()  # and it is not marked complete


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_cuda_profile_without_cuda_is_refused_up_front(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AACNB_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("AACNB_DATA", str(tmp_path / "data"))
    profile = tmp_path / "gpu.yaml"
    text = (Path(runs.__file__).parent / "profiles" / "tiny.yaml").read_text()
    profile.write_text(text.replace("device: cpu", "device: cuda", 1))
    assert "device: cuda" in profile.read_text()
    assert pipeline.cli_reproduce(["--profile", str(profile), "--dry-run"]) == 3
    out = capsys.readouterr().out
    assert "[MISSING] device: the profile asks for cuda" in out, out
    assert pipeline.cli_reproduce(["--profile", str(profile)]) == 1
    err = capsys.readouterr().err
    assert "asks for cuda" in err and "device: cpu" in err, err
    assert not (tmp_path / "reports" / "runs").exists() or not any((tmp_path / "reports" / "runs").rglob("COMPLETE.json"))
