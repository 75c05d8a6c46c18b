"""Log-mel extraction speed, as a multiple of real time: aacnb.audio.log_mel (batched, torch.stft) beside a plain
librosa-style numpy implementation (framing + np.fft.rfft + mel matmul) and the torchlibrosa-style conv front end
(aacnb.audio.Spectrogram + LogmelFilterBank, what PANNs checkpoints run), all measured in the same run.

    python -m benchmarks audio            # or: python benchmarks/bench_audio.py --clips 8 --seconds 10
"""
import argparse
import os
import time

import numpy as np
import torch

from aacnb.audio import LogMelConfig, LogmelFilterBank, Spectrogram, log_mel, mel_filters


def numpy_log_mel(x: np.ndarray, mel_fb: np.ndarray, n_fft: int = 1024, hop: int = 320) -> np.ndarray:
    "librosa.feature.melspectrogram + power_to_db, written out: (samples,) -> (frames, n_mels)."
    xp = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop]        # (T, n_fft), a view
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(x.dtype)
    spec = np.fft.rfft(frames * window, axis=1)                                # (T, n_freqs)
    power = spec.real ** 2 + spec.imag ** 2
    return 10 * np.log10(np.maximum(power @ mel_fb, 1e-10))                    # (T, n_mels)


def _best_interleaved(fns, repeats):
    "Best time of each function, run round-robin so that load from other processes hits them alike."
    for fn in fns:
        fn()  # warm-up (caches, allocator)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks audio", description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = LogMelConfig()
    n = int(args.seconds * cfg.sample_rate)
    audio_s = args.clips * args.seconds
    x = (np.random.default_rng(0).standard_normal((args.clips, n)) * 0.1).astype(np.float32)  # (B, S)
    xt = torch.from_numpy(x).to(args.device)
    fb = mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max).T.copy()   # (n_freqs, n_mels)
    spec = Spectrogram(n_fft=cfg.n_fft, hop_length=cfg.hop_length).to(args.device)
    lmfb = LogmelFilterBank(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min,
                            fmax=cfg.f_max).to(args.device)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run_ours():
        with torch.no_grad():
            log_mel(xt, cfg)
        sync()

    def run_ours_1thread():
        n_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            run_ours()
        finally:
            torch.set_num_threads(n_threads)

    def run_conv():
        with torch.no_grad():
            lmfb(spec(xt))
        sync()

    def run_numpy():
        for clip in x:
            numpy_log_mel(clip, fb, cfg.n_fft, cfg.hop_length)

    # the three agree (float32 vs float64 FFTs: a few thousandths of a dB)
    a = log_mel(xt[:1], cfg)[0].cpu().numpy()
    b = numpy_log_mel(x[0], fb)
    c = lmfb(spec(xt[:1]))[0, 0].detach().cpu().numpy()
    err_np, err_conv = float(np.abs(a - b).max()), float(np.abs(a - c).max())

    t_ours, t_ours1, t_conv, t_np = _best_interleaved([run_ours, run_ours_1thread, run_conv, run_numpy], args.repeats)
    rt = {name: audio_s / t for name, t in [("ours", t_ours), ("ours1", t_ours1), ("conv", t_conv), ("numpy", t_np)]}
    print(f"log-mel (32 kHz, n_fft 1024, hop 320, 64 mels) of {args.clips} x {args.seconds:g} s = {audio_s:g} s of audio; "
          f"device {args.device}, torch threads {torch.get_num_threads()}, best of {args.repeats} (interleaved), "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"  aacnb.audio.log_mel (batched, torch.stft)     : {t_ours * 1e3:8.1f} ms  {rt['ours']:9.0f} x real time")
    print(f"  aacnb.audio.log_mel, 1 torch thread           : {t_ours1 * 1e3:8.1f} ms  {rt['ours1']:9.0f} x real time")
    print(f"  numpy reference (frames + rfft + mel matmul)  : {t_np * 1e3:8.1f} ms  {rt['numpy']:9.0f} x real time")
    print(f"  torchlibrosa-style conv Spectrogram+Logmel    : {t_conv * 1e3:8.1f} ms  {rt['conv']:9.0f} x real time")
    print(f"  ratio log_mel / numpy = {rt['ours'] / rt['numpy']:.2f}x (1 thread: {rt['ours1'] / rt['numpy']:.2f}x);  conv / numpy = {rt['conv'] / rt['numpy']:.2f}x")
    print(f"  max |difference| vs log_mel: numpy {err_np:.2e} dB, conv {err_conv:.2e} dB")
    return {"log_mel_xrt": rt["ours"], "numpy_xrt": rt["numpy"], "conv_xrt": rt["conv"],
            "log_mel_1thread_xrt": rt["ours1"], "ratio": rt["ours"] / rt["numpy"]}


if __name__ == "__main__":
    main()
