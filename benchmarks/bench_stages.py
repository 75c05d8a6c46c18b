"""Every training stage of the paper profile at the report's sizes: seconds per step and peak memory, fp32 against
mixed precision (bf16; fp16 with a GradScaler on CUDA), measured in the same run.

    python -m benchmarks stages --device cuda          # what scripts/device_check.sh runs on a GPU
    python -m benchmarks stages --tiny --device cpu    # the same code at toy sizes (the smoke test)

Stages, as the paper profile (aacnb/profiles/paper.yaml) defines them, with random weights:
- retrieval: each bi-encoder of Table 2 (CNN14 + BERT-medium is also the captioners' feature extractor) on
  `--seconds` clips (the authors' random 10-s training crop), captions cut at the profile's 30 tokens, a
  micro-batch of `--retrieval-batch` (the profile's global batch is 128: with N GPUs each holds 128 / N);
- captioning XE: each decoder of Table 1 (vocabulary 4,368, 2048-d features of `--frames` frames), the profile's
  batch of 64, 20-word captions, stepwise scheduled sampling at teacher-forcing p = 0.85 (mid-training);
- SCST: the two-layer Transformer, batch 64: greedy baseline, one sampled caption per clip, CIDEr-D rewards with
  the batch's document frequencies, the policy-gradient step.
A step is what `fit` does with a batch: forward under autocast, backward (scaled for fp16), clipping at 1.0, Adam.
Time: the median of `--steps` steps after one warm-up step; memory: `torch.cuda.max_memory_allocated` over those
steps (CPU: the growth of the process's peak RSS, a coarse upper bound). A case that does not fit in memory, or
whose tokenizer is not available offline, is reported as such and the others go on.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = [f"w{i}" for i in range(5000)]
TINY_CAPTIONER = dict(vocab_size=200, feature_dim=32, enc_hidden=16, d_model=32, nhead=2, dim_feedforward=64,
                      gru_hidden=32, gru_emb_dim=16, attn_size=16)


class _State:
    progress = 0.5  # mid-training: stepwise scheduled sampling at teacher-forcing p = 1 - 0.3 * 0.5


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _retrieval_cases(tiny: bool):
    "(stage, label, build kwargs) of every bi-encoder the paper profile trains."
    if tiny:
        return [("retrieval", "cnn14-tiny + bert-tiny", dict(audio="cnn14-tiny", text="bert-tiny", embed_dim=32))]
    from aacnb.profile import load_profile
    p = load_profile("paper")
    out = []
    for s in p.retrieval.systems:
        fx = (s.audio, s.text) == (p.feature_extractor.audio, p.feature_extractor.text)
        out.append(("retrieval" + (" + feature extractor" if fx else ""), s.paper or s.name,
                    dict(audio=s.audio, text=s.text, embed_dim=p.retrieval.embed_dim, **s.overrides)))
    return out


def _captioner_cases(tiny: bool):
    if tiny:
        return [("captioning XE", "Transformer (tiny)", dict(decoder="transformer", num_layers=2, **TINY_CAPTIONER)),
                ("captioning XE", "GRU (tiny)", dict(decoder="gru", num_layers=1, **TINY_CAPTIONER))]
    from aacnb.paper import PAPER_CAPTIONER_CONFIGS
    return [("captioning XE", label, dict(decoder=dec, num_layers=n)) for label, dec, n in PAPER_CAPTIONER_CONFIGS]


def _retrieval_step(kw, B, seconds, device):
    from aacnb.retrieval import build_biencoder
    model = build_biencoder(pretrained=False, **kw).to(device).train()
    g = torch.Generator().manual_seed(0)
    batch = {"audio": 0.1 * torch.randn(B, int(32000 * seconds), generator=g).to(device),
             "audio_lengths": torch.full((B,), int(32000 * seconds), device=device),
             "caption": [" ".join(["a dog barks while", "rain falls on a roof and", "a car passes"][i % 3].split() * 3)
                         for i in range(B)]}
    return model, lambda: model(batch)["loss"]


def _caption_batch(cfg, B, frames, words, device, g):
    from aacnb.captioning import encode_captions
    from aacnb.text import Vocabulary
    vocab = Vocabulary(list(Vocabulary.SPECIALS) + WORDS[:cfg.vocab_size - 4])
    caps = [" ".join(vocab.itos[4 + int(j)] for j in torch.randint(0, len(vocab) - 4, (words,), generator=g))
            for _ in range(B)]
    return vocab, caps, {"features": torch.randn(B, frames, cfg.feature_dim, generator=g).to(device),
                         "feature_lengths": torch.full((B,), frames, device=device),
                         "tokens": encode_captions(caps, vocab, words + 2).to(device)}


def _xe_step(kw, B, frames, words, device):
    from aacnb.captioning import build_captioner
    model = build_captioner(**kw).to(device).train()
    _, _, batch = _caption_batch(model.config, B, frames, words, device, torch.Generator().manual_seed(0))
    return model, lambda: model.training_step(batch, _State())


def _scst_step(kw, B, frames, words, device):
    from aacnb.captioning import build_captioner
    from aacnb.scst import SCSTCaptioner
    model = build_captioner(**kw).to(device).train()
    g = torch.Generator().manual_seed(0)
    vocab, _, batch = _caption_batch(model.config, B, frames, words, device, g)
    refs = [[" ".join(vocab.itos[4 + int(j)] for j in torch.randint(0, 50, (words,), generator=g)) for _ in range(5)]
            for _ in range(B)]
    scst = SCSTCaptioner(model, vocab, max_len=words)
    return scst, lambda: scst.training_step({"features": batch["features"], "feature_lengths": batch["feature_lengths"],
                                             "captions": refs})["loss"]


def time_steps(make, precision: str, steps: int, device) -> dict:
    "Seconds per step (median) and peak memory of `make()`'s model and loss under `precision`."
    torch.manual_seed(0)
    model, loss_fn = make()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-5)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn()
        if isinstance(loss, dict):
            loss = loss["loss"]
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before, times = _peak_mib(device), []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    peak = _peak_mib(device) - (0 if device.type == "cuda" else before)
    n = sum(p.numel() for p in params) / 1e6
    del model, opt, loss_fn
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"s_per_step": statistics.median(times), "peak_mib": peak, "params_m": n}


def _case(make, precisions, steps, device) -> dict:
    out = {}
    for prec in precisions:
        try:
            out[prec] = time_steps(make, prec, steps, device)
        except torch.cuda.OutOfMemoryError:
            out[prec] = "out of memory"
            torch.cuda.empty_cache()
        except (FileNotFoundError, ImportError) as e:  # a tokenizer / package this machine does not have offline
            return {"skipped": f"{type(e).__name__}: {str(e).splitlines()[0][:140]}"}
    return out


def _show(stage, label, batch, res, precisions, device):
    if "skipped" in res:
        print(f"{stage:<34} {label:<28} skipped: {res['skipped']}", flush=True)
        return
    ref = res.get("fp32")
    cells, mems = [], []
    for prec in precisions:
        r = res[prec]
        if isinstance(r, str):
            cells.append(f"{prec} {r}")
            continue
        ratio = (f" ({ref['s_per_step'] / r['s_per_step']:.2f}x)" if prec != "fp32" and isinstance(ref, dict) else "")
        cells.append(f"{prec} {r['s_per_step'] * 1e3:8.1f} ms{ratio}")
        mems.append(f"{r['peak_mib'] / 1024:.2f}")
    n = next((r["params_m"] for r in res.values() if isinstance(r, dict)), float("nan"))
    unit = "GiB peak" if device.type == "cuda" else "GiB RSS growth"
    print(f"{stage:<34} {label:<28} {n:6.1f}M  batch {batch:<9} " + " | ".join(cells)
          + f"  [{unit} {' / '.join(mems)}]", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks stages", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="toy sizes (tests, CPU)")
    ap.add_argument("--stages", nargs="+", default=["retrieval", "xe", "scst"], choices=["retrieval", "xe", "scst"])
    ap.add_argument("--precisions", nargs="+", default=None, help="default: fp32 bf16 fp16 on CUDA, fp32 bf16 on CPU")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per case, after one warm-up step")
    ap.add_argument("--retrieval-batch", type=int, default=32, help="per-GPU micro-batch of the bi-encoders")
    ap.add_argument("--seconds", type=float, default=10.0, help="retrieval training crop (the authors': 10 s)")
    ap.add_argument("--caption-batch", type=int, default=64, help="captioning batch (the profile: 64)")
    ap.add_argument("--frames", type=int, default=94, help="feature frames per clip (CNN14: ~3 per second; 30 s: 94)")
    ap.add_argument("--words", type=int, default=20, help="caption length (the profile's max_len: 20)")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    device = torch.device(a.device)
    if a.tiny:
        a.retrieval_batch, a.seconds, a.caption_batch, a.frames, a.words = (min(a.retrieval_batch, 2),
                                                                            min(a.seconds, 0.5), 4, 6, 5)
    precisions = a.precisions or (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"device {device}{gpu}, torch {torch.__version__}; per case: 1 warm-up + {a.steps} timed steps; "
          f"ratios: fp32 time / mixed-precision time", flush=True)
    if "retrieval" in a.stages:
        for stage, label, kw in _retrieval_cases(a.tiny):
            res = _case(lambda: _retrieval_step(kw, a.retrieval_batch, a.seconds, device), precisions, a.steps, device)
            _show(stage, label, f"{a.retrieval_batch}x{a.seconds:g}s", res, precisions, device)
    caps = _captioner_cases(a.tiny)
    if "xe" in a.stages:
        for stage, label, kw in caps:
            res = _case(lambda: _xe_step(kw, a.caption_batch, a.frames, a.words, device), precisions, a.steps, device)
            _show(stage, label, str(a.caption_batch), res, precisions, device)
    if "scst" in a.stages:
        _, label, kw = caps[0]
        res = _case(lambda: _scst_step(kw, a.caption_batch, a.frames, a.words, device), precisions, a.steps, device)
        _show("SCST", label, str(a.caption_batch), res, precisions, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
