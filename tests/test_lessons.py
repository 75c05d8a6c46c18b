"""The teaching notebooks show what they teach: committed with their figures and players, and executing them
against the trained tiny models gives those outputs again. Only they may carry outputs."""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import run_lessons  # noqa: E402

# Where the trained study is, read before conftest points every test at an empty root: `make reproduce`
# writes into the checkout; $AACNB_REPORTS / $AACNB_DATA point elsewhere (only read here).
STUDY_ENV = {"AACNB_REPORTS": os.environ.get("AACNB_REPORTS") or str(ROOT / "reports"),
             "AACNB_DATA": os.environ.get("AACNB_DATA") or str(ROOT / "data")}

# At least one picture per figure the prose promises, and the players it promises.
PROMISED = {
    # waveform, log-mel, training curves, beam-search tree, cross-attention, CIDEr-D by hand, similarity
    # matrices before/after fine-tuning, nearest captions; the generated clip and the test clip
    "nbs/07_one_clip.ipynb": dict(images=8, audio=2),
    # the query's scores over the corpus; two captioned clips and the best search hit
    "nbs/08_demo.ipynb": dict(images=1, audio=3),
}


def counts(nb: dict) -> dict:
    "Image outputs, audio players, and outputs that are errors."
    outs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    return dict(images=sum("image/png" in o.get("data", {}) for o in outs),
                audio=sum("<audio" in "".join(o.get("data", {}).get("text/html", "")) for o in outs),
                errors=sum(o["output_type"] == "error" for o in outs))


def test_lessons_are_the_notebooks_promised():
    assert sorted(PROMISED) == sorted(run_lessons.LESSONS)


@pytest.mark.parametrize("lesson", sorted(PROMISED))
def test_committed_lessons_carry_their_pictures_and_sound(lesson):
    got = counts(json.loads((ROOT / lesson).read_text(encoding="utf-8")))
    assert got["errors"] == 0, f"{lesson} was committed with an error output"
    assert got["images"] >= PROMISED[lesson]["images"], f"{lesson}: {got}"
    assert got["audio"] >= PROMISED[lesson]["audio"], f"{lesson}: {got}"
    assert run_lessons.output_bytes(ROOT / lesson) <= run_lessons.MAX_OUTPUT_BYTES


def test_check_refuses_outputs_outside_the_lessons(tmp_path, monkeypatch):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for lesson in run_lessons.LESSONS:
        shutil.copy(ROOT / lesson, tmp_path / lesson)
    clean = {"cells": [{"cell_type": "code", "source": "1", "metadata": {}, "outputs": [], "execution_count": None}],
             "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (nbs / "12_retrieval.ipynb").write_text(json.dumps(clean))
    monkeypatch.setattr(run_lessons, "ROOT", tmp_path)
    assert run_lessons.check() == []
    clean["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "1\n"}]
    (nbs / "12_retrieval.ipynb").write_text(json.dumps(clean))
    problems = run_lessons.check()
    assert len(problems) == 1 and "nbs/12_retrieval.ipynb carries outputs" in problems[0]
    monkeypatch.setattr(run_lessons, "MAX_OUTPUT_BYTES", 1000)
    assert any("nbs/07_one_clip.ipynb carries" in p and "budget" in p for p in run_lessons.check())


@pytest.mark.slow
@pytest.mark.parametrize("lesson", sorted(PROMISED))
def test_lessons_execute_against_the_trained_models(lesson, tmp_path, monkeypatch):
    for k, v in STUDY_ENV.items():
        monkeypatch.setenv(k, v)
    from aacnb.lessons import study_models
    try:
        study_models("tiny")
    except FileNotFoundError as e:
        pytest.skip(f"no trained tiny study under {STUDY_ENV['AACNB_REPORTS']}: {e}")
    copy = tmp_path / Path(lesson).name
    shutil.copy(ROOT / lesson, copy)
    run_lessons.execute(copy)          # raises on the first failing cell
    got = counts(json.loads(copy.read_text(encoding="utf-8")))
    assert got["images"] >= PROMISED[lesson]["images"], got
    assert got["audio"] >= PROMISED[lesson]["audio"], got
