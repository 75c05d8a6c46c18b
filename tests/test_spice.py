"""SPICE for real: the jars `make install` fetched, on this machine's Java (17 here). The DCASE organisers' own per-clip
SPICE on 1,040 clips, the parse cache, and `aacnb evaluate` with and without the jars.

Every test here needs the jars (skipped, naming the command that installs them, when they are missing); the first
also needs ../shared (skipped when absent, as on a user's clone)."""
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import aacnb.metrics as M
from aacnb.metrics import evaluate

ROOT = Path(__file__).resolve().parents[1]
THIRD_PARTY = ROOT.parent / "shared" / "data" / "clotho-captions" / "third_party_system_outputs_eval.csv"
AACNB = Path(sys.executable).parent / "aacnb"


def _why_no_spice():
    try:
        M.spice_classpath()
    except M.SpiceUnavailable as e:
        return f"SPICE cannot run here ({e})"
    return None


needs_spice = pytest.mark.skipif(_why_no_spice() is not None, reason=str(_why_no_spice()))
pytestmark = [pytest.mark.slow, needs_spice]


@pytest.mark.skipif(not THIRD_PARTY.is_file(), reason=f"{THIRD_PARTY} is absent (the project's shared folder is not "
                    "beside this checkout, as on a user's clone)")
def test_spice_matches_the_dcase_organisers():
    """1,040 clips x 5 references, per-clip SPICE from the DCASE evaluation in the file: corpus SPICE equals their mean,
    per clip within 1e-3 on at least 99% of clips. Cold cache (a fresh machine): about 335 CPU-seconds of parsing,
    6 to 12 min here on 2 cores shared with other work; warm: 15 s."""
    with open(THIRD_PARTY, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    preds = [r["caption_predicted"] for r in rows]
    refs = [[r[f"caption_{i}"] for i in range(1, 6)] for r in rows]
    theirs = np.array([float(r["spice"]) for r in rows])
    corpus, per_clip = evaluate(preds, refs, metrics=("cider_d", "spice", "spider"))
    diff = np.abs(per_clip["spice"] - theirs)
    bad = np.flatnonzero(~(diff <= 1e-3))                  # NaN counts as a mismatch
    listing = "\n".join(f"  {rows[i]['file_name']}: ours {per_clip['spice'][i]:.6f}, theirs {theirs[i]:.6f}, "
                        f"prediction {preds[i]!r}" for i in bad[:25])
    assert len(bad) <= 0.01 * len(rows), f"{len(bad)} of {len(rows)} clips differ by more than 1e-3:\n{listing}"
    assert corpus["spice"] == pytest.approx(theirs.mean(), abs=1e-6), listing
    their_spider = np.array([float(r["spider"]) for r in rows])
    assert corpus["spider"] == pytest.approx(their_spider.mean(), abs=1e-6)
    assert corpus["spider"] == pytest.approx((corpus["cider_d"] + corpus["spice"]) / 2)


def test_parse_cache_in_a_user_folder(tmp_path, monkeypatch):
    """The cache (LMDB, which needs aacnb's --add-opens on Java 17) lands in $AACNB_SPICE_CACHE, not in site-packages,
    and a second evaluation of the same captions, served from it, gives the same scores."""
    cache = tmp_path / "spice-cache"
    monkeypatch.setenv("AACNB_SPICE_CACHE", str(cache))
    monkeypatch.delenv("JDK_JAVA_OPTIONS", raising=False)          # the user sets nothing
    pycoco_spice = M._pycoco_dir() / "spice"
    before = sorted(p.relative_to(pycoco_spice) for p in pycoco_spice.rglob("*"))
    preds = ["a dog barks loudly", "rain falls on a tin roof", ""]
    refs = [["a dog is barking", "the dog barks at a passing car"], ["heavy rain on a metal roof"],
            ["birds sing in the trees"]]
    _, first = evaluate(preds, refs, metrics=("spice",))
    assert (cache / "data.mdb").stat().st_size > 0
    _, again = evaluate(preds, refs, metrics=("spice",))
    np.testing.assert_array_equal(first["spice"], again["spice"])
    assert 0 < first["spice"][0] <= 1 and first["spice"][2] == 0            # an empty caption has no tuples
    assert sorted(p.relative_to(pycoco_spice) for p in pycoco_spice.rglob("*")) == before


def _csvs(tmp_path):
    (tmp_path / "p.csv").write_text("file_name,caption\na.wav,a dog barks loudly\nb.wav,rain falls on a roof\n")
    (tmp_path / "r.csv").write_text("file_name,caption_1,caption_2,caption_3\n"
                                    "a.wav,A dog is barking.,Dogs bark loudly.,A dog barks at a car.\n"
                                    "b.wav,Rain falls on a tin roof.,Heavy rain.,Rain is pouring on a roof.\n")
    return ["--predictions", str(tmp_path / "p.csv"), "--references", str(tmp_path / "r.csv")]


def _table(stdout):
    rows = re.findall(rf"^({'|'.join(M.METRIC_NAMES)})\s+(\S+)$", stdout, re.M)
    return {m: (None if v == "n/a" else float(v)) for m, v in rows}


def test_cli_prints_spice_and_spider(tmp_path):
    p = subprocess.run([str(AACNB), "evaluate", *_csvs(tmp_path), "--metrics", "bleu_4,cider_d,spice,spider"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    scores = _table(p.stdout)
    assert set(scores) == {"bleu_4", "cider_d", "spice", "spider"}, p.stdout
    assert 0 < scores["spice"] <= 1
    assert scores["spider"] == pytest.approx((scores["cider_d"] + scores["spice"]) / 2, abs=1e-4)


def test_cli_without_the_jars_prints_the_rest_and_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "AACNB_SPICE_DIR": str(tmp_path / "empty")}           # the jars removed
    p = subprocess.run([str(AACNB), "evaluate", *_csvs(tmp_path)], capture_output=True, text=True, timeout=600,
                       env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    scores = _table(p.stdout)
    assert scores["spice"] is None and scores["spider"] is None
    assert all(scores[m] is not None and scores[m] >= 0 for m in M.METRIC_NAMES[:7]), p.stdout
    assert "SPICE skipped" in p.stderr and "run `aacnb metrics-setup`" in p.stderr
