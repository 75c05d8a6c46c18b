"""Beam search speed: batched (all clips x beams as tensors, cached keys/values) vs clip-by-clip references.

    python -m benchmarks decoding                 # batch 32, beam 3, 20 steps, 2-layer Transformer, 2 threads
    python benchmarks/bench_decoding.py --decoder gru --threads 1

Three ways to run the same beam search on the same random-weight captioner (Table 1 sizes: 4,368 words,
2,048-d CNN14 frames):
  batched      `aacnb.decoding.beam_search`: one (B*K)-row batch, incremental decoding with a cache;
  per-clip     `beam_search_reference`: one clip at a time (K rows), same cache;
  recompute    `beam_search_reference(recompute=True)`: one clip at a time, the whole prefix rerun at every
               step, as the authors' code decodes.
The <eos> logit is pinned low so every method runs exactly `--steps` steps. Each method is timed twice: the
beam search alone, from encoder outputs computed once beforehand (`memories=`), and captioning end to end,
where each method also runs the BiGRU encoder on its clips (batched, or clip by clip). Times are the best of
`--repeats` interleaved rounds (the CPU is shared); the slow recompute reference is timed on `--ref-clips`
clips and reported per clip. A clip-by-clip search's operations are small, so more threads may slow it
rather than help: each per-clip method is timed with one thread and with `--threads`, and keeps its faster
(the `thr` column); the batched methods run with `--threads`.

After the table it prints what bounds each side, measured in the same run: the decoder's weights, which every
step reads whatever its number of rows, timed as matrix products at a per-clip search's rows and at the
batched search's, beside the time a step takes; and the share of the BiGRU encoder's arithmetic that batching
cannot cut (the first layer's input projection, paid per frame either way).
"""
from __future__ import annotations

import argparse
import time

import torch


_PER_CLIP = ("word_embedding", "memory_proj", "cross_attn.k.", "cross_attn.v.", "fc_proj")  # looked up, or once a clip


def _weights(m) -> list[torch.Tensor]:
    "The decoder's matrices a decoding step multiplies by: its 2-D weights but the embeddings and the audio side's."
    return [p for n, p in m.decoder.named_parameters() if p.dim() == 2 and not any(k in n for k in _PER_CLIP)]


def _matmul_ms(weights, rows: int, repeats: int, sync) -> float:
    "Best time (ms) of multiplying a (rows, in) input by each weight once: reading every matrix, no other work."
    xs = [torch.randn(rows, w.shape[1], device=w.device) for w in weights]
    best = float("inf")
    for _ in range(max(3, repeats)):
        sync(); t = time.perf_counter()
        for x, w in zip(xs, weights):
            torch.nn.functional.linear(x, w)
        sync(); best = min(best, time.perf_counter() - t)
    return 1000 * best


def _account(m, B: int, K: int, S: int, frames: int, best: dict, thr: dict, repeats: int, sync) -> None:
    "What bounds each side, from this run's times: weight reading vs fixed costs per step, and the encoder."
    ws = _weights(m)
    mb = sum(w.numel() * w.element_size() for w in ws) / 2**20
    ms_k = _matmul_ms(ws, K, repeats, sync)
    ms_bk = _matmul_ms(ws, B * K, repeats, sync)
    step_clip = 1000 * best[("beam per-clip, cached", "search")] / (B * S)    # one clip's step, K rows
    step_batch = 1000 * best[("beam batched (ours)", "search")] / S           # one step of all clips, B*K rows
    share = ms_k / step_clip
    rest = ("reading the weights is most of it" if share >= 0.8 else
            f"{100 * share:.0f}% of it; the rest is the fixed cost of its many small operations")
    print(f"what bounds each side: every step reads the decoder's {len(ws)} weight matrices ({mb:.1f} MB). "
          f"Multiplying {K} rows by each of them takes {ms_k:.2f} ms; a per-clip step takes {step_clip:.2f} ms "
          f"({thr[('beam per-clip, cached', 'search')]} thr): {rest}. Multiplying all {B * K} rows of the batch "
          f"takes {ms_bk:.2f} ms, {100 * ms_bk / step_batch:.0f}% of the {step_batch:.2f} ms a batched step takes "
          f"(the rest: attention, softmax, top-k and bookkeeping, paid once for all {B} clips): the weights are read "
          f"once a step for the whole batch instead of once per clip, which is where batching wins.")
    g = m.encoder.gru
    H, D = g.hidden_size, g.input_size
    first = 2 * 3 * D * H                                    # per frame: both directions, three gates
    rest = 2 * 3 * (2 * H) * H * (g.num_layers - 1) + 2 * 3 * H * H * g.num_layers   # deeper inputs, recurrences
    e_b, e_1 = best[("encoder batched", "encoder")], best[("encoder per-clip", "encoder")]
    print(f"the encoder batches {e_1 / e_b:.1f}x: its first layer's input projection ({D} -> 2 x 3 x {H} per frame, "
          f"{100 * first / (first + rest):.0f}% of its arithmetic over {frames} frames) is one large product "
          f"batched or clip by clip, and costs the same in both.")


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
    with torch.inference_mode():
        mem = m.encode(feats, lens)                         # for the search-only timings: encoded once, outside
    mem_r = {k: v[:R] for k, v in mem.items()}
    methods = {  # name: (mode, clips timed, fn(encoder outputs or None: encode inside, end to end))
        "beam batched (ours)": ("beam", B, lambda e: beam_search(m, feats, lens, K, S, memories=e)),
        "beam per-clip, cached": ("beam", B, lambda e: beam_search_reference(m, feats, lens, K, S, memories=e)),
        "greedy batched (ours)": ("greedy", B, lambda e: greedy_decode(m, feats, lens, S, memories=e)),
        "greedy per-clip, cached": ("greedy", B, lambda e: beam_search_reference(m, feats, lens, 1, S, memories=e)),
    }
    if not a.skip_recompute:
        methods["beam per-clip, recompute prefix (authors)"] = (
            "beam", R, lambda e: beam_search_reference(m, feats[:R], lens[:R], K, S, recompute=True,
                                                       memories=None if e is None else mem_r))
        methods["greedy per-clip, recompute prefix (authors)"] = (
            "greedy", R, lambda e: beam_search_reference(m, feats[:R], lens[:R], 1, S, recompute=True,
                                                         memories=None if e is None else mem_r))
    encoders = {"encoder batched": lambda: m.encode(feats, lens),
                "encoder per-clip": lambda: [m.encode(feats[i:i + 1], lens[i:i + 1]) for i in range(B)]}
    runs = {(name, part): (lambda fn=fn, e=e: fn(e)) for name, (_, _, fn) in methods.items()
            for part, e in (("search", mem), ("end to end", None))}
    runs.update({(name, "encoder"): fn for name, fn in encoders.items()})
    ref_threads = [a.threads] if dev.type == "cuda" else sorted({1, a.threads})
    best, thr, outs = {k: float("inf") for k in runs}, {}, {}
    with torch.inference_mode():
        beam_search(m, feats[:2], lens[:2], K, S)              # warm-up
        for _ in range(a.repeats):                              # interleaved: a busy spell hits all methods alike
            for key, fn in runs.items():
                for threads in ([a.threads] if "batched" in key[0] else ref_threads):
                    torch.set_num_threads(threads)
                    sync(); t = time.perf_counter()
                    outs[key] = fn()
                    sync(); t = time.perf_counter() - t
                    if t < best[key]:
                        best[key], thr[key] = t, threads
    torch.set_num_threads(a.threads)
    for part in ("search", "end to end"):
        out_b = outs[("beam batched (ours)", part)]
        assert out_b == outs[("beam per-clip, cached", part)], f"batched and per-clip beam search disagree ({part})"
        assert outs[("greedy batched (ours)", part)] == outs[("greedy per-clip, cached", part)]
        assert all(len(c) == S for c in out_b)
        if not a.skip_recompute:
            assert outs[("beam per-clip, recompute prefix (authors)", part)] == out_b[:R], "recomputing reference disagrees"
    assert outs[("beam batched (ours)", "search")] == outs[("beam batched (ours)", "end to end")]
    rate = {k: (methods[k[0]][1] if k[0] in methods else B) / t for k, t in best.items()}   # clips per second
    print(f"{'':45} {'beam search alone':>25}   {'captioning end to end':>25}")
    print(f"{'method':45} {'clips/s':>9} {'thr':>3} {'batched is':>11}   {'clips/s':>9} {'thr':>3} {'batched is':>11}")
    for name, (mode, _, _) in methods.items():
        cells = []
        for part in ("search", "end to end"):
            ours = rate[(f"{mode} batched (ours)", part)]
            cells.append(f"{rate[(name, part)]:9.1f} {thr[(name, part)]:3d} {ours / rate[(name, part)]:10.1f}x")
        print(f"{name:45} {cells[0]}   {cells[1]}")
    e_b, e_1 = best[("encoder batched", "encoder")], best[("encoder per-clip", "encoder")]
    print(f"the BiGRU encoder alone (in every end-to-end time, searched clips encoded once): batched {B / e_b:.1f} "
          f"clips/s, clip by clip {B / e_1:.1f} clips/s ({thr[('encoder per-clip', 'encoder')]} thr; {e_1 / e_b:.1f}x)")
    print("identical captions: batched == per-clip" + ("" if a.skip_recompute else f" == recompute (first {R} clips)")
          + ", from given encoder outputs and end to end")
    with torch.inference_mode():
        _account(m, B, K, S, a.frames, best, thr, a.repeats, sync)
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
