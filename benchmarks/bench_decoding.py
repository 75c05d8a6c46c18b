"""Beam search speed: batched (all clips x beams as tensors, cached keys/values) vs clip-by-clip references.

    python -m benchmarks decoding                 # batch 32, beam 3, 20 steps, 2-layer Transformer, 2 threads
    python benchmarks/bench_decoding.py --decoder gru --threads 1

Three ways to run the same beam search on the same random-weight captioner (Table 1 sizes: 4,368 words,
2,048-d CNN14 frames):
  batched      `aacnb.decoding.beam_search`: one (B*K)-row batch, incremental decoding with a cache;
  per-clip     `beam_search_reference`: one clip at a time (K rows), same cache;
  recompute    `beam_search_reference(recompute=True)`: one clip at a time, the whole prefix rerun at every
               step, as the authors' code decodes.
The <eos> logit is pinned low so every method runs exactly `--steps` steps. Times are the best of
`--repeats` interleaved rounds (the CPU is shared), encoder included (each method encodes its own clips);
the slow recompute reference is timed on `--ref-clips` clips and reported per clip.
"""
from __future__ import annotations

import argparse
import time

import torch


def main(argv=None):
    from aacnb.captioning import build_captioner
    from aacnb.decoding import beam_search, beam_search_reference, greedy_decode

    ap = argparse.ArgumentParser(prog="python -m benchmarks decoding", description=__doc__.split("\n")[0])
    ap.add_argument("--decoder", default="transformer", choices=["transformer", "gru"])
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--frames", type=int, default=31, help="feature frames per clip (CNN14: ~3 per second)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref-clips", type=int, default=8, help="clips timed for the slow recompute reference")
    ap.add_argument("--skip-recompute", action="store_true", help="skip the slow authors-style reference")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (timings wait for the GPU to finish)")
    a = ap.parse_args([] if argv is None else argv)

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    m = build_captioner(a.decoder, a.layers, vocab_size=4368, feature_dim=2048).eval()
    with torch.no_grad():
        m.decoder.classifier.bias[m.config.eos_id] = -1e4   # never stop early: exactly `steps` steps
    m = m.to(dev)
    feats = torch.randn(a.batch, a.frames, 2048).to(dev)
    lens = torch.full((a.batch,), a.frames, dtype=torch.long).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    B, K, S = a.batch, a.beam, a.steps
    print(f"{a.decoder} x{m.config.num_layers}, {sum(p.numel() for p in m.parameters()) / 1e6:.2f} M params; "
          f"batch {B}, beam {K}, {S} steps, {a.frames} frames, {dev}, {a.threads} threads, best of {a.repeats}")

    R = min(a.ref_clips, B)
    methods = {  # name: (mode, clips timed, fn)
        "beam batched (ours)": ("beam", B, lambda: beam_search(m, feats, lens, K, S)),
        "beam per-clip, cached": ("beam", B, lambda: beam_search_reference(m, feats, lens, K, S)),
        "greedy batched (ours)": ("greedy", B, lambda: greedy_decode(m, feats, lens, S)),
        "greedy per-clip, cached": ("greedy", B, lambda: beam_search_reference(m, feats, lens, 1, S)),
        "encoder batched": ("encoder", B, lambda: m.encode(feats, lens)),
        "encoder per-clip": ("encoder", B, lambda: [m.encode(feats[i:i + 1], lens[i:i + 1]) for i in range(B)]),
    }
    if not a.skip_recompute:
        methods["beam per-clip, recompute prefix (authors)"] = (
            "beam", R, lambda: beam_search_reference(m, feats[:R], lens[:R], K, S, recompute=True))
        methods["greedy per-clip, recompute prefix (authors)"] = (
            "greedy", R, lambda: beam_search_reference(m, feats[:R], lens[:R], 1, S, recompute=True))
    best, outs = {k: float("inf") for k in methods}, {}
    with torch.inference_mode():
        beam_search(m, feats[:2], lens[:2], K, S)              # warm-up
        for _ in range(a.repeats):                              # interleaved: a busy spell hits all methods alike
            for name, (_, _, fn) in methods.items():
                sync(); t = time.perf_counter()
                outs[name] = fn()
                sync(); best[name] = min(best[name], time.perf_counter() - t)
    out_b = outs["beam batched (ours)"]
    assert out_b == outs["beam per-clip, cached"], "batched and per-clip beam search disagree"
    assert outs["greedy batched (ours)"] == outs["greedy per-clip, cached"]
    assert all(len(c) == S for c in out_b)
    if not a.skip_recompute:
        assert outs["beam per-clip, recompute prefix (authors)"] == out_b[:R], "recomputing reference disagrees"
    rate = {k: methods[k][1] / t for k, t in best.items()}          # clips per second
    print(f"{'method':45} {'clips/s':>9} {'batched is':>11}")
    for name, (mode, n, _) in methods.items():
        if mode == "encoder":
            continue
        ours = rate[f"{mode} batched (ours)"]
        print(f"{name:45} {rate[name]:9.1f} {ours / rate[name]:10.1f}x")
    e_b, e_1 = best["encoder batched"], best["encoder per-clip"]
    d_b, d_1 = best["beam batched (ours)"] - e_b, best["beam per-clip, cached"] - e_1
    print(f"encoder alone: batched {e_b:.3f} s, clip by clip {e_1:.3f} s for {B} clips; beam search without it: "
          f"batched {d_b:.3f} s vs per-clip {d_1:.3f} s ({d_1 / max(d_b, 1e-9):.1f}x)")
    print("identical captions: batched == per-clip" + ("" if a.skip_recompute else f" == recompute (first {R} clips)"))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
