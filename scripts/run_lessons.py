"""Execute the teaching notebooks in place, so they carry their outputs (figures, players) when committed.

    python scripts/run_lessons.py                       # every notebook in LESSONS
    python scripts/run_lessons.py nbs/08_demo.ipynb     # only these
    python scripts/run_lessons.py --check               # exit 1 when outputs are where they should not be

The cells that need the trained tiny models (`#| eval: false`, skipped by nbdev_test) run too, so the study
must be there: `make reproduce` first, or point $AACNB_REPORTS and $AACNB_DATA at a finished study (they are
only read). Each notebook is written atomically once it ran without an error, then `nbdev_clean` strips
execution counts and metadata and keeps the outputs. `scripts/check_notebooks.sh` refuses outputs in any
other notebook and outputs over the size budget below.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The notebooks whose outputs are committed (reading order); every other notebook is kept output-free.
LESSONS = ["nbs/07_one_clip.ipynb", "nbs/08_demo.ipynb"]
MAX_OUTPUT_BYTES = 1_500_000   # per notebook: PNGs at modest dpi and a few 16 kHz clips fit well below


def execute(path: Path, timeout: int = 900) -> None:
    "Run every cell of `path` with its own folder as working directory; raise on the first failing cell."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".ipynb")
    os.close(fd)
    nbformat.write(nb, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def output_bytes(path: Path) -> int:
    "Size of the outputs a notebook carries, as stored (base64 PNGs and WAVs count as their text)."
    nb = json.loads(path.read_text(encoding="utf-8"))
    return sum(len(json.dumps(c.get("outputs", []))) - 2 for c in nb["cells"] if c["cell_type"] == "code")


def check() -> list[str]:
    "Problems: outputs in a notebook not in LESSONS, a lesson without outputs, or one over MAX_OUTPUT_BYTES."
    problems = []
    for path in sorted((ROOT / "nbs").rglob("*.ipynb")):
        rel, size = path.relative_to(ROOT).as_posix(), output_bytes(path)
        if ".ipynb_checkpoints" in rel:
            continue
        if rel not in LESSONS and size:
            problems.append(f"{rel} carries outputs ({size} bytes): only {', '.join(LESSONS)} keep theirs; "
                            "clear them (JupyterLab: Edit > Clear Outputs of All Cells)")
        elif rel in LESSONS and not size:
            problems.append(f"{rel} has no outputs: run python scripts/run_lessons.py {rel} against a finished study")
        elif size > MAX_OUTPUT_BYTES:
            problems.append(f"{rel} carries {size} bytes of outputs, over the {MAX_OUTPUT_BYTES} budget: "
                            "smaller figures (dpi), fewer or shorter audio players")
    return problems


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        problems = check()
        for p in problems:
            print(f"run_lessons --check: {p}", file=sys.stderr)
        return 1 if problems else 0
    paths = [Path(a).resolve() for a in argv] or [ROOT / p for p in LESSONS]
    for p in paths:
        if not p.is_file():
            print(f"run_lessons: {p} not found", file=sys.stderr)
            return 1
        print(f"run_lessons: executing {p.relative_to(ROOT)}", flush=True)
        execute(p)
    subprocess.run([str(Path(sys.executable).parent / "nbdev_clean")], cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
