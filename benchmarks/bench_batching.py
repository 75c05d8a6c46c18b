"""Encoding clips of mixed lengths (issue #19): the previous batching against exact, length-grouped batching,
measured in the same run on the same clips.

    python -m benchmarks batching
    python -m benchmarks batching --encoder cnn14 --clips 32 --long-seconds 600 --device cuda

The clips: `--clips` of `--min-seconds`..`--max-seconds` (uniform, like a folder of Clotho files) plus one
of `--long-seconds` (the long recording that used to pad its batch-mates), in a shuffled "file order".
Three ways to embed them all, with `--batch-size` clips a batch at most:

1. previous: batches in file order, zero-padded to their longest clip, the encoder without per-clip masking
   (the computation before issue #19: the reference, ratio 1);
2. exact, file order: the same batches with `lengths`, so every clip is computed as if alone (the cost of
   exactness by itself: per-clip front end, zeroed frames before each convolution);
3. exact + length batches: `aacnb.audio.length_batches` (neighbours by length, longest first, a cap on padded
   samples), what `extract_features`, `aacnb caption`, `embed_clips` and the study's evaluation now do.

It prints seconds, audio seconds per second, padded audio per batch, peak memory on CUDA, the ratio of each
to the reference, and the largest difference of any clip's embedding from the clip encoded alone.
"""
from __future__ import annotations

import argparse
import os
import random
import time

import torch
import torch.nn.functional as F

from aacnb.audio import SAMPLE_RATE, length_batches
from aacnb.encoders import build_audio_encoder


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _run(enc, clips, batches, exact, device):
    "Embed `clips` in `batches` of indices -> (seconds, embeddings in clip order, padded samples, peak MiB)."
    out = [None] * len(clips)
    padded = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t = time.perf_counter()
    with torch.no_grad():
        for idx in batches:
            n = torch.tensor([len(clips[i]) for i in idx])
            x = torch.stack([F.pad(clips[i], (0, int(n.max()) - len(clips[i]))) for i in idx]).to(device)  # (B, S)
            padded += x.numel()
            clip = enc(x, n.to(device) if exact else None)["clip"].float().cpu()                        # (B, D)
            for k, i in enumerate(idx):
                out[i] = clip[k]
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else float("nan")
    return time.perf_counter() - t, torch.stack(out), padded, peak


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks batching", description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="cnn14-tiny", help="an aacnb.encoders name (cnn14, wavegram-logmel-cnn14, ...)")
    ap.add_argument("--clips", type=int, default=15, help="short clips, besides the long one")
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--max-seconds", type=float, default=30.0)
    ap.add_argument("--long-seconds", type=float, default=120.0, help="the one long file (0: none)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs of each way (interleaved)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = random.Random(0)
    seconds = [rng.uniform(args.min_seconds, args.max_seconds) for _ in range(args.clips)]
    if args.long_seconds > 0:
        seconds.insert(rng.randrange(len(seconds) + 1), args.long_seconds)
    g = torch.Generator().manual_seed(0)
    clips = [0.1 * torch.randn(int(s * SAMPLE_RATE), generator=g) for s in seconds]
    torch.manual_seed(0)
    enc = build_audio_encoder(args.encoder).to(device).eval()

    in_order = [list(range(i, min(i + args.batch_size, len(clips)))) for i in range(0, len(clips), args.batch_size)]
    grouped = length_batches([len(c) for c in clips], args.batch_size)
    ways = [("previous: file order, padded, no masks", in_order, False),
            ("exact, file order", in_order, True),
            ("exact + length batches", grouped, True)]
    _run(enc, clips[:2], [[0, 1]], True, device)  # warm-up (allocator, kernels)
    best = [None] * len(ways)
    for _ in range(args.repeats):
        for k, (_, batches, exact) in enumerate(ways):
            r = _run(enc, clips, batches, exact, device)
            if best[k] is None or r[0] < best[k][0]:
                best[k] = r
    with torch.no_grad():  # each clip alone: what every way should give, to float rounding
        alone = torch.stack([enc(c[None].to(device))["clip"].float().cpu()[0] for c in clips])

    audio_s = sum(seconds)
    print(f"{args.encoder} on {device}: {len(clips)} clips, {audio_s:.0f} s of audio "
          f"({min(seconds):.1f}-{max(seconds):.1f} s), batch size {args.batch_size}, best of {args.repeats}; "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    ref = best[0][0]
    for (name, batches, _), (t, emb, padded, peak) in zip(ways, best):
        err = float((emb - alone).abs().max())
        mem = "" if peak != peak else f", peak {peak:7.0f} MiB"
        print(f"  {name:40s}: {t:8.2f} s  {audio_s / t:8.1f} x real time, {len(batches)} batches, padded audio "
              f"{padded / SAMPLE_RATE:7.0f} s{mem}; time {t / ref:.2f} x previous; max |clip - alone| {err:.1e}")
    return 0


if __name__ == "__main__":
    main()
