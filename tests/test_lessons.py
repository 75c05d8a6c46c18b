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


def _mini_study(root: Path) -> dict:
    """A study named `tiny` at toy size (20 + 8 + 4 clips, one retrieval system, one captioner, a few steps each),
    trained under `root`, so the lessons run on a fresh clone (CI) as well: their models are the ones they look for
    (`ret_cnn14_bertb_*`, `cap_transformer2_s0_scst`), only smaller. Returns the environment that points at it."""
    import subprocess
    from toy_study import toy_profile
    toy_profile(root / "tiny.yaml", "tiny", "corpus", ("cnn14_bertb", "CNN14 + BERT-base"), pretrain_epochs=1,
                xe_swa_epochs=1, scst_epochs=1, description="the lessons' toy study")
    env = {"AACNB_REPORTS": str(root / "reports"), "AACNB_DATA": str(root / "data")}
    driver = "import sys; from aacnb import study; study.run_pipeline(sys.argv[1], tables=[3, 4], report=False)"
    r = subprocess.run([sys.executable, "-c", driver, str(root / "tiny.yaml")], env=dict(os.environ, **env),
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return env


@pytest.fixture(scope="module")
def study_env(tmp_path_factory):
    "The trained tiny study when there is one (`make reproduce`, or $AACNB_REPORTS/$AACNB_DATA), else a toy one."
    from aacnb.lessons import study_models
    with pytest.MonkeyPatch.context() as mp:
        for k, v in STUDY_ENV.items():
            mp.setenv(k, v)
        try:
            study_models("tiny")
            return dict(STUDY_ENV)
        except FileNotFoundError:
            pass
    return _mini_study(tmp_path_factory.mktemp("lessons_study"))


@pytest.mark.slow
@pytest.mark.parametrize("lesson", sorted(PROMISED))
def test_lessons_execute_against_the_trained_models(lesson, study_env, tmp_path, monkeypatch):
    for k, v in study_env.items():
        monkeypatch.setenv(k, v)
    copy = tmp_path / Path(lesson).name
    shutil.copy(ROOT / lesson, copy)
    run_lessons.execute(copy)          # raises on the first failing cell
    got = counts(json.loads(copy.read_text(encoding="utf-8")))
    assert got["images"] >= PROMISED[lesson]["images"], got
    assert got["audio"] >= PROMISED[lesson]["audio"], got
