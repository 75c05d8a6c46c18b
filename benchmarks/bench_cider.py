"""CIDEr-D speed: aacnb.cider.CiderD beside pycocoevalcap's CIDEr-D on the Clotho evaluation size (1,045 clips x 5
references), measured in the same run, with a check that both give the same per-clip scores.

Two uses are timed:
  * the whole set, document frequencies from its references (the evaluation): `Cider().compute_score` vs
    `CiderD().compute` (target >= 5x);
  * an SCST reward: a batch of 64 sampled captions scored with corpus statistics (df, log N) precomputed from
    the 1,045 clips' references: pycocoevalcap's own `CiderScorer.compute_cider` given that df vs
    `CiderD(corpus_references=...).compute` (target >= 30x). pycocoevalcap's plain `Cider()` on the batch (df
    from the batch, what the report's toolkit did) is timed too, against `CiderD().compute`.

Real captions from the project's shared folder when present (../shared/data/clotho-captions), generated ones
otherwise. Captions are lower-cased and stripped of punctuation for both sides (no Java here).

    python -m benchmarks cider            # or: python benchmarks/bench_cider.py --repeats 5 --batch 64
"""
import argparse
import csv
import random
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer

from aacnb.cider import CiderD

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "clotho-captions" / "clotho_captions_evaluation.csv"
_WORDS = ("a the dog cat bird birds car cars rain wind water door man woman people children engine bell is are "
          "barks sings passes falls blows runs rings loudly softly in on by near distance background while and "
          "then again metal wooden street truck train crowd talking walking footsteps music plays chirping "
          "flowing running machine humming buzzing slowly quickly outside inside road heavy light small large").split()


def _normalise(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def load_references(n_clips=1045, seed=0):
    "(references (n_clips, 5), source): real Clotho evaluation captions when present, else generated ones."
    if SHARED.is_file():
        with open(SHARED, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))[:n_clips]
        return [[_normalise(r[f"caption_{i}"]) for i in range(1, 6)] for r in rows], f"real ({SHARED.name})"
    rng = random.Random(seed)
    refs = [[" ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 20))) for _ in range(5)]
            for _ in range(n_clips)]
    return refs, "generated"


def sample_captions(refs, seed=0):
    "One 'sampled' caption per clip: 6-14 words drawn from that clip's reference words (overlap like a model)."
    rng = random.Random(seed)
    out = []
    for rs in refs:
        words = " ".join(rs).split()
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))))
    return out


class _Len(list):
    "A list whose len() is the corpus size, so CiderScorer's `log(len(crefs))` is log(N_corpus)."
    def __init__(self, items, n):
        super().__init__(items)
        self._n = n

    def __len__(self):
        return self._n


def pycoco_corpus_df(corpus):
    "Document frequencies pycocoevalcap-style (dict n-gram -> number of clips), computed once."
    df = defaultdict(float)
    for rs in corpus:
        grams = set()
        for r in rs:
            w = r.split()
            grams.update(tuple(w[i:i + k]) for k in range(1, 5) for i in range(len(w) - k + 1))
        for g in grams:
            df[g] += 1
    return df


def pycoco_with_corpus_df(preds, refs, df, n_docs):
    "pycocoevalcap's CiderScorer.compute_cider with df and log N from a corpus (its own code, df injected)."
    s = CiderScorer(n=4, sigma=6.0)
    for p, r in zip(preds, refs):
        s += (p, r)
    s.document_frequency = df
    crefs = s.crefs
    s.crefs = _Len(crefs, n_docs)
    try:
        return np.array(s.compute_cider())
    finally:
        s.crefs = crefs


def _best(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks cider", description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=1045)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    refs, source = load_references(args.clips, args.seed)
    preds = sample_captions(refs, args.seed)
    P = len(refs)
    print(f"{P} clips x {len(refs[0])} references, {source} captions; best of {args.repeats} runs")

    # 1. The whole set, df from its own references.
    gts, res = dict(enumerate(refs)), {i: [p] for i, p in enumerate(preds)}
    fast = CiderD()
    ref_mean, ref_clip = Cider().compute_score(gts, res)
    mean, per_clip = fast.compute(preds, refs)
    diff_all = float(np.abs(per_clip - ref_clip).max())
    t_ref = _best(lambda: Cider().compute_score(gts, res), args.repeats)
    t_fast = _best(lambda: fast.compute(preds, refs), args.repeats)
    rows = [("whole set, df from its refs", P, t_ref, t_fast, diff_all, 5)]

    # 2. SCST reward: batches of sampled captions, corpus statistics precomputed.
    rng = random.Random(args.seed + 1)
    idx = [rng.randrange(P) for _ in range(args.batch)]
    b_refs = [refs[i] for i in idx]
    b_preds = sample_captions(b_refs, args.seed + 2)
    t0 = time.perf_counter()
    scst = CiderD(corpus_references=refs)
    t_build = time.perf_counter() - t0
    df = pycoco_corpus_df(refs)
    expected = pycoco_with_corpus_df(b_preds, b_refs, df, P)
    diff_b = float(np.abs(scst.compute(b_preds, b_refs)[1] - expected).max())
    t_ref_b = _best(lambda: pycoco_with_corpus_df(b_preds, b_refs, df, P), args.repeats * 4)
    t_fast_b = _best(lambda: scst.compute(b_preds, b_refs), args.repeats * 4)
    rows.append((f"batch of {args.batch}, corpus df precomputed", args.batch, t_ref_b, t_fast_b, diff_b, 30))

    # 3. The report's toolkit: plain Cider() on the batch (df from the batch's references).
    bg, br = dict(enumerate(b_refs)), {i: [p] for i, p in enumerate(b_preds)}
    diff_bb = float(np.abs(CiderD().compute(b_preds, b_refs)[1] - Cider().compute_score(bg, br)[1]).max())
    t_ref_bb = _best(lambda: Cider().compute_score(bg, br), args.repeats * 4)
    t_fast_bb = _best(lambda: CiderD().compute(b_preds, b_refs), args.repeats * 4)
    rows.append((f"batch of {args.batch}, df from the batch", args.batch, t_ref_bb, t_fast_bb, diff_bb, None))

    print(f"{'case':<38} {'clips':>5} {'pycocoevalcap':>14} {'aacnb':>10} {'ratio':>7} {'target':>7} {'max|diff|':>10}")
    for name, n, tr, tf, d, target in rows:
        tgt = f">={target}x" if target else "-"
        ok = "" if target is None else ("  ok" if tr / tf >= target else "  BELOW TARGET")
        print(f"{name:<38} {n:>5} {tr * 1e3:>11.2f} ms {tf * 1e3:>7.2f} ms {tr / tf:>6.1f}x {tgt:>7} {d:>10.1e}{ok}")
    print(f"(corpus tables for the SCST case built once in {t_build * 1e3:.0f} ms; CIDEr-D of the whole set "
          f"{mean:.4f} both ways)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
