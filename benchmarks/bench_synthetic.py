"""Synthetic corpus generation speed, as a multiple of real time (seconds of audio made per second), and the two
choices that make it fast, each beside the plain version timed in the same run: tones read from a wavetable vs
one `np.sin` per harmonic, and FFT filtering padded to a 5-smooth length vs the raw (often prime) slot length.

    python -m benchmarks synthetic          # or: python benchmarks/bench_synthetic.py --clips 40
"""
import argparse
import tempfile
import time

import numpy as np

from aacnb import sounds
from aacnb import synthetic as S


def _sin_tone(f, sr, harmonics, rolloff=1.0):
    "The plain way: one sine per harmonic over the whole contour."
    ph = 2 * np.pi * np.cumsum(f) / sr
    K = max(1, min(harmonics, int((sr / 2 - 500) // max(float(np.max(f)), 1.0))))
    return sum(np.sin(k * ph) / k**rolloff for k in range(1, K + 1))


def _raw_filter(x, sr, hi):
    X = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / sr)
    return np.fft.irfft(X * sounds.band_gain(f, hi=hi), len(x))


def _best(fn, repeats=3):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench_synthetic")
    p.add_argument("--clips", type=int, default=30, help="clips rendered for the real-time factor")
    p.add_argument("--corpus", type=int, default=60, help="Clotho-format clips for the make_corpus timing (0: skip)")
    a = p.parse_args(argv)
    sr = 32000

    t = time.perf_counter(); secs = 0.0
    for i in range(a.clips):
        audio, scene = S.make_clip(0, "clotho", "development", i)
        secs += len(audio) / sr
    el = time.perf_counter() - t
    print(f"make_clip (scene + audio + 5 captions): {a.clips} clips, {secs:.0f} s of audio in {el:.2f} s "
          f"= {secs / el:.0f}x real time, {1000 * el / a.clips:.0f} ms per clip")

    f = np.full(6 * sr, 60.0) * (1 + 0.03 * np.sin(np.arange(6 * sr) / sr))
    tw, ts = _best(lambda: sounds.tone(f, sr, 30, 0.9)), _best(lambda: _sin_tone(f, sr, 30, 0.9))
    print(f"30-harmonic engine tone, 6 s: wavetable {1000 * tw:.1f} ms vs per-harmonic sin {1000 * ts:.1f} ms "
          f"({ts / tw:.1f}x)")

    n_prime = 191_977   # slot lengths are arbitrary; at a prime length pocketfft falls back to Bluestein
    y = np.random.default_rng(0).standard_normal(n_prime)
    tf, tr = _best(lambda: sounds.band_filter(y, sr, hi=2000.0)), _best(lambda: _raw_filter(y, sr, 2000.0))
    print(f"low-pass of a {n_prime}-sample slot (prime length): padded to {sounds.fast_len(n_prime)} {1000 * tf:.1f} ms "
          f"vs raw length {1000 * tr:.1f} ms ({tr / tf:.1f}x)")

    if a.corpus:
        with tempfile.TemporaryDirectory() as d:
            for w in (1, 2):
                t = time.perf_counter()
                S.make_corpus(f"{d}/w{w}", n_clips=a.corpus, n_audiocaps=0, n_macs=0, num_workers=w, progress=False)
                el = time.perf_counter() - t
                print(f"make_corpus {a.corpus} clips with {w} worker(s): {el:.1f} s "
                      f"({1000 * el / a.corpus:.0f} ms per clip, files written)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
