"""The benchmark commands run end to end at toy sizes and print their ratio lines (speed itself is never asserted)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _spice_expect():
    "bench_spice measures only where SPICE runs and ../shared is beside the checkout; elsewhere it says why it skips."
    from aacnb.metrics import SpiceUnavailable, spice_classpath
    try:
        spice_classpath()
    except SpiceUnavailable:
        return "skipped: SPICE cannot run here"
    shared = ROOT.parent / "shared" / "data" / "clotho-captions" / "third_party_system_outputs_eval.csv"
    return "ratio cold / cached" if shared.is_file() else "skipped: "

TOY = {  # benchmark: (toy-size options, a line fragment it must print)
    "audio": (["--clips", "1", "--seconds", "1", "--repeats", "1", "--threads", "1"], "ratio log_mel / numpy"),
    "batching": (["--clips", "2", "--min-seconds", "1", "--max-seconds", "2", "--long-seconds", "4", "--batch-size", "2",
                  "--repeats", "1", "--threads", "1"], "exact + length batches"),
    "cider": (["--clips", "12", "--batch", "4", "--repeats", "1"], "pycocoevalcap"),
    "ddp": (["--model", "captioner", "--batch-size", "4", "--steps", "2", "--frames", "8", "--feature-dim", "16"],
            "samples/s"),
    "decoding": (["--batch", "2", "--steps", "3", "--repeats", "1", "--ref-clips", "1", "--threads", "1"],
                 "identical captions: batched == per-clip == recompute"),
    "spice": (["--clips", "5"], _spice_expect()),
    "retrieval": (["--batch-size", "2", "--seconds", "1", "--steps", "1", "--metric-clips", "12", "--device", "cpu"],
                  "frozen text encoder: memoised captions"),
    "stages": (["--tiny", "--device", "cpu", "--steps", "1", "--precisions", "fp32"], "SCST"),
    "synthetic": (["--clips", "1", "--corpus", "0"], "wavetable"),
}


@pytest.mark.parametrize("name", sorted(TOY))
def test_benchmark_runs_and_prints_ratios(name):
    options, expect = TOY[name]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "benchmarks", name, *options], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert f"== benchmark: {name} ==" in p.stdout
    assert expect in p.stdout, p.stdout


def test_options_need_one_benchmark():
    p = subprocess.run([sys.executable, "-m", "benchmarks", "audio", "cider", "--repeats", "1"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "exactly one benchmark" in p.stderr
    p = subprocess.run([sys.executable, "-m", "benchmarks", "nonesuch"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "nonesuch" in p.stderr
