"""Retrieval benchmark: training throughput and peak memory of the bi-encoder, and two speed-ups measured
against plain references in the same run.

    python -m benchmarks retrieval
    python benchmarks/bench_retrieval.py --pairs cnn14-tiny:minilm cnn14:bert-base --batch-size 32 --seconds 10

What is measured (all on this machine, in this process):
1. Training step (forward + backward + Adam step, the loop's real work per batch) of each (audio, text) pair on
   `--batch-size` random clips of `--seconds` at 32 kHz with short captions: clips/s (median over `--steps`
   timed steps after one warm-up step) and peak memory (CUDA: `max_memory_allocated`; CPU: growth of the
   process's peak RSS during the steps, a coarse upper bound). On CUDA the step also runs under fp16 autocast
   (what `fit` uses with amp="auto") and the ratio AMP / fp32 is printed.
   With a frozen text encoder (`BiEncoder.freeze_text`, the tiny profile's setting) the step is timed twice:
   captions memoised (after the warm-up step every caption is known) vs the encoder re-run on every step.
2. Embedding a folder for search: batched `encode_audio` vs the per-file loop (batch of 1) on the same clips,
   in eval mode; ratio batched / per-file.
3. `retrieval_metrics` (one sort per query on the whole matrix) vs a per-query Python loop (the brute-force
   reference of the tests), on a random (captions x clips) matrix with Clotho's 5 captions per clip.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batch(B, seconds, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = 0.1 * torch.randn(B, int(32000 * seconds), generator=g)
    words = ["dog", "rain", "car", "bird", "bell", "wind", "engine", "door", "crowd", "water"]
    caps = [f"a {words[i % 10]} and a {words[(3 * i) % 10]} are heard while people talk nearby" for i in range(B)]
    return {"audio": audio.to(device), "audio_lengths": torch.full((B,), audio.shape[1], device=device), "caption": caps}


def bench_train_step(audio, text, B, seconds, steps, device, amp=False, frozen_text=None):
    """frozen_text: None (train both encoders), 'memo' (freeze_text: captions encoded once), 'reencode' (frozen,
    but the text encoder runs on every step: the memo is emptied before each step)."""
    from aacnb.retrieval import build_biencoder
    torch.manual_seed(0)
    model = build_biencoder(audio, text, pretrained="text" if text == "minilm" else False).to(device)
    if frozen_text:
        model.freeze_text()
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batch = _batch(B, seconds, device)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")

    def step():
        if frozen_text == "reencode":
            model.freeze_text()  # (re)freezing forgets the memoised captions
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = model(batch)["loss"]
        scaler.scale(loss).backward()
        scaler.step(opt); scaler.update()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (allocations, cuDNN autotuning)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = _peak_rss_mib()
    times = []
    for _ in range(steps):
        t = time.perf_counter(); step(); _sync(device); times.append(time.perf_counter() - t)
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _peak_rss_mib()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    del model, opt
    return {"clips_per_s": B / statistics.median(times), "peak_mib": mem, "rss_growth_mib": _peak_rss_mib() - rss0,
            "params_m": n_params}


@torch.no_grad()
def bench_embedding(audio, B, seconds, device, repeats=2):
    from aacnb.encoders import build_audio_encoder
    torch.manual_seed(0)
    enc = build_audio_encoder(audio).to(device).eval()
    x = _batch(B, seconds, device)["audio"]
    enc(x[:2]); _sync(device)

    def batched():
        enc(x)

    def per_file():
        for i in range(B):
            enc(x[i:i + 1])

    out = {}
    for name, fn in (("batched", batched), ("per_file", per_file)):
        ts = []
        for _ in range(repeats):
            t = time.perf_counter(); fn(); _sync(device); ts.append(time.perf_counter() - t)
        out[name] = B / min(ts)
    return out


def _brute_force_t2a(S, t2a):
    n_t, n_a = S.shape
    r1 = aps = 0.0
    for i in range(n_t):
        order = sorted(range(n_a), key=lambda j: (-S[i, j], j))
        rank = order.index(t2a[i])
        r1 += rank < 1
        aps += 1 / (rank + 1) if rank < 10 else 0.0
    return 100 * r1 / n_t, 100 * aps / n_t


def bench_metrics(n_clips):
    from aacnb.retrieval import retrieval_metrics
    rng = np.random.default_rng(0)
    S = rng.standard_normal((5 * n_clips, n_clips))
    t2a = np.repeat(np.arange(n_clips), 5)
    retrieval_metrics(S[:50, :10], t2a[:50])  # warm-up (first-call dispatch)
    t = time.perf_counter(); got = retrieval_metrics(S, t2a); t_vec = time.perf_counter() - t
    t = time.perf_counter(); r1, map10 = _brute_force_t2a(S, t2a); t_loop = time.perf_counter() - t
    assert abs(got["r1"] - r1) < 1e-9 and abs(got["map10"] - map10) < 1e-9
    return {"vectorised_s": t_vec, "loop_t2a_only_s": t_loop}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks retrieval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", nargs="+", default=["cnn14-tiny:minilm"],
                    help="audio:text pairs to time, e.g. cnn14:bert-base (default: the tiny default pair)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0, help="clip length (Clotho clips are 15-30 s)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--metric-clips", type=int, default=1045, help="clips of the metrics benchmark (Clotho eval: 1045)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-frozen-text", dest="frozen_text", action="store_false",
                    help="skip timing the frozen-text-encoder step (memoised vs re-encoded captions)")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    from aacnb.core import get_device
    device = get_device(a.device)
    threads = torch.get_num_threads()
    print(f"device {device}, torch {torch.__version__}, {threads} CPU threads; batch {a.batch_size} x {a.seconds:g} s")

    for pair in a.pairs:
        audio, _, text = pair.partition(":")
        r = bench_train_step(audio, text or "minilm", a.batch_size, a.seconds, a.steps, device)
        mem = (f"peak GPU memory {r['peak_mib']:.0f} MiB" if device.type == "cuda" else
               f"peak RSS {r['peak_mib']:.0f} MiB (+{r['rss_growth_mib']:.0f} MiB during the steps)")
        print(f"train step {audio}+{text} ({r['params_m']:.1f}M params): {r['clips_per_s']:.1f} clips/s, {mem}")
        if device.type == "cuda":
            ra = bench_train_step(audio, text or "minilm", a.batch_size, a.seconds, a.steps, device, amp=True)
            print(f"  fp16 autocast: {ra['clips_per_s']:.1f} clips/s, peak {ra['peak_mib']:.0f} MiB; "
                  f"ratio AMP/fp32 = {ra['clips_per_s'] / r['clips_per_s']:.2f}x")
        if a.frozen_text:  # the tiny profile's setting: a frozen pretrained text encoder, its projection trains
            fm = bench_train_step(audio, text or "minilm", a.batch_size, a.seconds, a.steps, device, frozen_text="memo")
            fr = bench_train_step(audio, text or "minilm", a.batch_size, a.seconds, a.steps, device,
                                  frozen_text="reencode")
            print(f"  frozen text encoder: memoised captions {fm['clips_per_s']:.1f} clips/s vs re-encoded every step "
                  f"{fr['clips_per_s']:.1f} clips/s; ratio = {fm['clips_per_s'] / fr['clips_per_s']:.2f}x")

    audio0 = a.pairs[0].partition(":")[0]
    e = bench_embedding(audio0, a.batch_size, a.seconds, device)
    print(f"search embedding {audio0}: batched {e['batched']:.1f} clips/s vs per-file loop {e['per_file']:.1f} "
          f"clips/s; ratio batched/per-file = {e['batched'] / e['per_file']:.2f}x")

    m = bench_metrics(a.metric_clips)
    print(f"retrieval_metrics on {5 * a.metric_clips}x{a.metric_clips}: vectorised (both directions) "
          f"{m['vectorised_s'] * 1e3:.1f} ms vs Python loop (text->audio only) {m['loop_t2a_only_s'] * 1e3:.0f} ms; "
          f"ratio loop/vectorised = {m['loop_t2a_only_s'] / m['vectorised_s']:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
