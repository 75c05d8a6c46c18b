"""Distributed training: samples/s of `fit` on 1 and on N processes (torchrun), at the same global batch.

    python -m benchmarks ddp                                  # CPU: 1 and 2 processes (gloo), 1 thread each
    python -m benchmarks ddp --device cuda --nproc 1 2 4      # GPUs: NCCL, one GPU per process

What is measured: `aacnb.training.fit` training a model on random data for one epoch of `--steps` global batches
of `--batch-size` (split across the processes), started with `torchrun --standalone --nproc_per_node N` for each N
of `--nproc`. The clock runs from the end of the first optimiser step (the warm-up: allocations, DDP's bucket
set-up) to the end of the last one, as `fit` runs them (loading, forward, backward, the gradient all-reduce,
clipping, the optimiser, the log); process start-up, imports and the checkpoints written at the end are outside.
samples/s = (steps - 1) x batch / that time, and the ratio is against 1 process in the same run. A check line
compares the loss each run logged at its first step: the same global batch through the same initial weights
(dropout and SpecAugment are off, so only the bi-encoder's BatchNorm, which normalises each process's slice of
the batch, can make it differ).

Models: `--model retrieval` (the bi-encoder, cnn14-tiny + bert-tiny by default: InfoNCE over the gathered batch;
`--audio`/`--text` for others) or `--model captioner` (a Transformer captioner on random features, XE).
On the 2-core development machine two 1-thread processes share the cores one process could use with two threads:
there the point is that it runs and agrees, not the scaling.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ["dog", "rain", "car", "bird", "bell", "wind", "engine", "door", "crowd", "water"]


class _Pairs(torch.utils.data.Dataset):
    "Random clips of `seconds` at 32 kHz with short captions (retrieval)."
    def __init__(self, n, seconds):
        self.n, self.samples = n, int(32000 * seconds)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"audio": 0.1 * torch.randn(self.samples, generator=g),
                "caption": f"a {WORDS[i % 10]} and a {WORDS[(3 * i + 1) % 10]} are heard"}


class _Captions(torch.utils.data.Dataset):
    "Random feature sequences (T, D) with random token captions (captioning XE)."
    def __init__(self, n, frames, dim, vocab):
        self.n, self.frames, self.dim, self.vocab = n, frames, dim, vocab

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        words = torch.randint(4, self.vocab, (8 + i % 8,), generator=g)
        return {"features": torch.randn(self.frames, self.dim, generator=g),
                "tokens": torch.cat([torch.tensor([1]), words, torch.tensor([2])])}


def _collate_captions(items):
    from aacnb.datasets import collate_audio
    out = collate_audio([{"features": it["features"]} for it in items])
    out["tokens"] = torch.nn.utils.rnn.pad_sequence([it["tokens"] for it in items], batch_first=True)
    return out


def _job(spec):
    "(model, dataset, collate) of the spec, the same in every process."
    torch.manual_seed(0)
    n = spec["steps"] * spec["batch_size"]
    if spec["model"] == "retrieval":
        from aacnb.datasets import collate_audio
        from aacnb.retrieval import build_biencoder
        model = build_biencoder(spec["audio"], spec["text"], embed_dim=256, spec_augment=False, dropout=0.0,
                                embed_dropout=0.0)
        return model, _Pairs(n, spec["seconds"]), collate_audio
    from aacnb.captioning import build_captioner
    model = build_captioner("transformer", num_layers=2, vocab_size=1000, feature_dim=spec["feature_dim"],
                            dropout=0.0, enc_dropout=0.0, tf_start=1.0, tf_end=1.0)
    return model, _Captions(n, spec["frames"], spec["feature_dim"], 1000), _collate_captions


def worker(spec_path: str) -> None:
    "What each process runs: `fit` for one epoch, timing its optimiser steps; rank 0 writes the times."
    from aacnb.train_config import TrainConfig
    from aacnb.training import fit
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    model, data, collate = _job(spec)
    cfg = TrainConfig(epochs=1, batch_size=spec["batch_size"], lr=1e-4, schedule="constant", seed=0,
                      device=spec["device"], amp=spec["amp"], monitor="", log_every=1, progress=False)
    stamps = []

    def on_step(state):
        if spec["device"] != "cpu":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    fit(model, data, cfg, spec["out_dir"], collate_fn=collate, on_step=on_step)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(spec["out_dir"], "times.json").write_text(json.dumps(stamps))


def run(nproc: int, spec: dict, root: Path) -> dict:
    "samples/s and the first logged loss of one run on `nproc` processes."
    out = root / f"nproc{nproc}"
    out.mkdir(parents=True)
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps({**spec, "out_dir": str(out)}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(Path(__file__).resolve()), "--worker", str(spec_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(spec["threads"])})
    if p.returncode:
        raise RuntimeError(f"{nproc} processes failed (exit {p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-4000:]}")
    stamps = json.loads((out / "times.json").read_text())
    with open(out / "log.csv", newline="") as f:
        first_loss = float(next(csv.DictReader(f))["loss"])
    return {"samples_per_s": (len(stamps) - 1) * spec["batch_size"] / (stamps[-1] - stamps[0]), "first_loss": first_loss}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        worker(argv[1])
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks ddp", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["retrieval", "captioner"], default="retrieval")
    ap.add_argument("--audio", default="cnn14-tiny")
    ap.add_argument("--text", default="bert-tiny")
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts to time (1 is the reference)")
    ap.add_argument("--batch-size", type=int, default=8, help="the global batch (divisible by every --nproc)")
    ap.add_argument("--steps", type=int, default=6, help="optimiser steps; the first is the warm-up")
    ap.add_argument("--seconds", type=float, default=2.0, help="retrieval: clip length")
    ap.add_argument("--frames", type=int, default=40, help="captioner: feature frames per clip")
    ap.add_argument("--feature-dim", type=int, default=128, help="captioner: feature width")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", default="off", help="TrainConfig.amp: off | bf16 | fp16 (CUDA) | auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    a = ap.parse_args(argv)
    if 1 not in a.nproc:
        a.nproc = [1, *a.nproc]
    bad = [n for n in a.nproc if n < 1 or a.batch_size % n]
    if bad or a.steps < 2:
        ap.error(f"--batch-size {a.batch_size} must be divisible by every --nproc (not {bad}) and --steps >= 2")
    if a.device == "cuda" and max(a.nproc) > torch.cuda.device_count():
        ap.error(f"--nproc {max(a.nproc)} needs that many GPUs; this machine shows {torch.cuda.device_count()}")
    spec = dict(model=a.model, audio=a.audio, text=a.text, batch_size=a.batch_size, steps=a.steps, seconds=a.seconds,
                frames=a.frames, feature_dim=a.feature_dim, device=a.device, amp=a.amp, threads=a.threads)
    what = (f"bi-encoder {a.audio} + {a.text}, {a.seconds:g}-s clips" if a.model == "retrieval" else
            f"Transformer captioner, {a.frames} x {a.feature_dim} features")
    print(f"{what}; global batch {a.batch_size}, {a.steps} steps (1 warm-up); device {a.device}, amp {a.amp}, "
          f"{a.threads} thread(s) per process; torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        res = {n: run(n, spec, Path(d)) for n in sorted(set(a.nproc))}
    ref = res[1]
    print(f"{'processes':>9}  {'samples/s':>9}  {'ratio vs 1':>10}  {'first loss':>10}")
    for n, r in res.items():
        print(f"{n:>9}  {r['samples_per_s']:>9.1f}  {r['samples_per_s'] / ref['samples_per_s']:>9.2f}x  "
              f"{r['first_loss']:>10.6f}")
    worst = max(abs(r["first_loss"] - ref["first_loss"]) for r in res.values())
    why = (" (BatchNorm statistics: per process)" if a.model == "retrieval" and "cnn14" in a.audio else "")
    print(f"check: the first step's loss on N processes vs 1 differs by at most {worst:.1e}{why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
