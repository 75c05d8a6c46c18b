"""Run benchmarks: `python -m benchmarks` runs them all, `python -m benchmarks audio cider` runs the named ones,
`python -m benchmarks decoding --threads 1` runs one with its own options (`--help` lists them).

Each benchmarks/bench_<area>.py has `main(argv=None)` and prints what it measured on this machine, as a ratio
against the reference implementation timed in the same run (never a number remembered from elsewhere).
"""
import importlib
import pkgutil
import sys
from pathlib import Path


def available():
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if m.name.startswith("bench_"))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:first_option] or available(), argv[first_option:]
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    if options and len(names) != 1:
        print(f"options {options} need exactly one benchmark named before them (each has its own); got {names}",
              file=sys.stderr)
        return 2
    for name in names:
        print(f"== benchmark: {name} ==", flush=True)
        rc = importlib.import_module(f"benchmarks.bench_{name}").main(options)
        if isinstance(rc, int) and not isinstance(rc, bool) and rc:  # some return their measurements
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
