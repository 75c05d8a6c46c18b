"""SPICE speed: `aacnb.metrics.evaluate(..., metrics=("spice",))` on the 1,040 clips of the real-caption set (5
references each), in one run:

  * cold: SPICE's parse cache is a new, empty folder, so every caption is parsed (a fresh machine; the reference
    the other two are compared with);
  * cached: the same captions again (Table 3 re-evaluated, `aacnb evaluate` run twice);
  * new predictions: every prediction changed (its last word dropped), the references cached (model selection:
    each epoch brings new captions for the same clips).

Each row is one JVM (CoreNLP's models load in it only when something is left to parse). The scores are checked
against the DCASE organisers' per-clip SPICE in the file, and cold against cached.

Skips, saying why, when the file is absent (../shared is not beside a user's clone) or SPICE cannot run (its jars
are installed by `make install`, or `aacnb metrics-setup`).

    python -m benchmarks spice               # all 1,040 clips: several minutes, most of it the cold parse
    python -m benchmarks spice --clips 20    # a smoke run
"""
import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from aacnb import metrics as M

SHARED = (Path(__file__).resolve().parents[2] / "shared" / "data" / "clotho-captions"
          / "third_party_system_outputs_eval.csv")


def _timed(preds, refs):
    t = time.perf_counter()
    corpus, per_clip = M.evaluate(preds, refs, metrics=("spice",))
    return time.perf_counter() - t, corpus["spice"], per_clip["spice"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks spice", description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=1040, help="the first N clips of the file")
    args = ap.parse_args(argv)
    if not SHARED.is_file():
        print(f"skipped: {SHARED} is absent (the project's shared folder is not beside this checkout)")
        return 0
    try:
        M.spice_classpath()
    except M.SpiceUnavailable as e:
        print(f"skipped: SPICE cannot run here: {e}")
        return 0
    with open(SHARED, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:args.clips]
    preds = [r["caption_predicted"] for r in rows]
    refs = [[r[f"caption_{i}"] for i in range(1, 6)] for r in rows]
    theirs = np.array([float(r["spice"]) for r in rows])
    changed = [" ".join(p.split()[:-1]) for p in preds]
    n_refs = len({r for rs in refs for r in rs})
    print(f"SPICE on {len(rows)} clips x 5 references ({SHARED.name}: {len(set(preds))} distinct predictions, "
          f"{n_refs} distinct references), Java {M.java_version()}, {os.cpu_count()} cores")

    old = os.environ.get("AACNB_SPICE_CACHE")
    with tempfile.TemporaryDirectory(prefix="bench-spice-") as cache:
        os.environ["AACNB_SPICE_CACHE"] = cache
        try:
            t_cold, c_cold, p_cold = _timed(preds, refs)
            t_cached, _, p_cached = _timed(preds, refs)
            t_new, _, _ = _timed(changed, refs)
        finally:
            if old is None:
                os.environ.pop("AACNB_SPICE_CACHE")
            else:
                os.environ["AACNB_SPICE_CACHE"] = old

    print(f"{'case':<46} {'time':>9} {'clips/s':>8} {'ratio':>7}")
    for name, t in (("cold cache: every caption parsed (reference)", t_cold),
                    ("cached: the same captions again", t_cached),
                    ("new predictions, references cached", t_new)):
        print(f"{name:<46} {t:>7.1f} s {len(rows) / t:>8.1f} {t_cold / t:>6.1f}x")
    within = int((np.abs(p_cold - theirs) <= 1e-3).sum())
    print(f"ratio cold / cached {t_cold / t_cached:.1f}x; cached scores identical to cold: "
          f"{'yes' if np.array_equal(p_cold, p_cached) else 'NO'}")
    print(f"corpus SPICE {c_cold:.4f} (organisers' mean {theirs.mean():.4f}); per clip within 1e-3 of theirs: "
          f"{within}/{len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
