"""Write README.md from nbs/index.ipynb (nbdev's convention; `nbdev_readme` needs Quarto, which these
machines cannot install, so the conversion is done here: markdown cells as they are, code cells fenced).

    python scripts/make_readme.py          # write README.md
    python scripts/make_readme.py --check  # exit 1 when README.md differs from the notebook
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


_INCLUDE = re.compile(r"^<!-- include (?P<path>\S+) -->$", re.M)


def _includes(text: str) -> str:
    "Replace `<!-- include reports/tiny/table4.md -->` lines by that generated file (the README shows, never types, results)."
    def sub(m):
        path = ROOT / m.group("path")
        return path.read_text(encoding="utf-8").strip() if path.exists() else f"*({m.group('path')} not generated yet: run `make reproduce`)*"
    return _INCLUDE.sub(sub, text)


def render(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    parts = ["<!-- generated from nbs/index.ipynb by scripts/make_readme.py: edit the notebook -->"]
    for cell in nb["cells"]:
        src = "".join(cell["source"]).strip("\n")
        if not src or src.startswith("#| hide"):
            continue
        parts.append(_includes(src) if cell["cell_type"] == "markdown" else f"```python\n{src}\n```")
    return "\n\n".join(parts) + "\n"


def main(argv):
    text = render(ROOT / "nbs" / "index.ipynb")
    readme = ROOT / "README.md"
    if "--check" in argv:
        if not readme.exists() or readme.read_text(encoding="utf-8") != text:
            print("README.md is out of date with nbs/index.ipynb: run python scripts/make_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
