"""Round-trip between clean notebooks and percent-format scripts, for editing notebooks as text.

    python scripts/nbpct.py to-nb  draft.py nbs/12_retrieval.ipynb   # write a clean notebook
    python scripts/nbpct.py to-py  nbs/12_retrieval.ipynb draft.py   # get the text back to edit

Cells start with `# %%` (code) or `# %% [markdown]` (markdown lines carry a leading `# `).
`# %% tags=["parameters"]` sets cell tags (papermill's parameters cell). The notebooks stay the source
of truth: the percent file is a scratch copy, never committed.
"""
import hashlib
import json
import re
import sys
from pathlib import Path

_HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def _cell_id(stem: str, i: int) -> str:
    return hashlib.sha1(f"{stem}:{i}".encode()).hexdigest()[:8]


def py_to_nb(src: str, stem: str) -> dict:
    cells, cur = [], None
    for line in src.splitlines():
        m = _HEADER.match(line)
        if m:
            cur = {"md": bool(m.group("md")), "tags": json.loads(m.group("tags") or "[]"), "lines": []}
            cells.append(cur)
        elif cur is not None:
            cur["lines"].append(line)
    out = []
    for i, c in enumerate(cells):
        lines = c["lines"]
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if c["md"]:
            lines = [l[2:] if l.startswith("# ") else l[1:] if l.startswith("#") else l for l in lines]
        text = "\n".join(lines)
        cell = {"cell_type": "markdown" if c["md"] else "code", "id": _cell_id(stem, i),
                "metadata": {"tags": c["tags"]} if c["tags"] else {}, "source": text.splitlines(keepends=True)}
        if not c["md"]:
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return {"cells": out, "metadata": {"kernelspec": {"display_name": "python3", "language": "python",
                                                     "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def nb_to_py(nb: dict) -> str:
    parts = []
    for c in nb["cells"]:
        tags = c.get("metadata", {}).get("tags")
        suffix = f" tags={json.dumps(tags)}" if tags else ""
        src = "".join(c["source"])
        if c["cell_type"] == "markdown":
            parts.append(f"# %% [markdown]{suffix}\n" + "\n".join(("# " + l) if l else "#" for l in src.splitlines()))
        else:
            parts.append(f"# %%{suffix}\n{src}")
    return "\n\n".join(parts) + "\n"


def main(argv):
    if len(argv) != 3 or argv[0] not in ("to-nb", "to-py"):
        print(__doc__)
        return 2
    cmd, src, dst = argv
    if cmd == "to-nb":
        nb = py_to_nb(Path(src).read_text(), Path(dst).stem)
        Path(dst).write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    else:
        Path(dst).write_text(nb_to_py(json.loads(Path(src).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
