"""Make `import torchaudio` work beside a torch it was not compiled against.

No torchaudio release matches torch 2.13.0 (the CPU wheel these machines carry). torchaudio 2.11.1 installs
beside it, but its compiled extension (`lib/_torchaudio*.so`, `lib/libtorchaudio*.so`) is linked against a
CUDA torch 2.11 and `import torchaudio` raises at load time. Everything aacnb uses from torchaudio
(`functional.resample`, `compliance.kaldi.fbank`, `transforms.MelSpectrogram`) is pure Python on top of torch,
so when -- and only when -- the import fails for that reason we move the extension aside: torchaudio then
imports with `_IS_TORCHAUDIO_EXT_AVAILABLE = False`. On a machine where the extension loads (a CUDA stack
that matches), nothing is touched.
"""
import importlib.util
import pathlib
import subprocess
import sys


def _import_error() -> str:
    r = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True, text=True)
    return "" if r.returncode == 0 else (r.stderr.strip().splitlines() or ["unknown error"])[-1]


def main() -> int:
    err = _import_error()
    if not err:
        print("torchaudio: imports as installed")
        return 0
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or spec.origin is None:
        print("torchaudio: not installed", file=sys.stderr)
        return 1
    if "Could not load this library" not in err and "undefined symbol" not in err:
        print(f"torchaudio: import fails for another reason, not touching it: {err}", file=sys.stderr)
        return 1
    lib = pathlib.Path(spec.origin).parent / "lib"
    parked = lib / "disabled-extension"
    parked.mkdir(exist_ok=True)
    for so in sorted(lib.glob("*torchaudio*.so")):
        so.rename(parked / so.name)
        print(f"torchaudio: moved {so.name} aside (compiled for another torch)")
    err = _import_error()
    if err:
        print(f"torchaudio: still fails to import: {err}", file=sys.stderr)
        return 1
    print("torchaudio: imports (pure-Python parts; compiled extension disabled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
