"""Sizes of the package's modules and functions, read with `ast` (no import): what a maintainer has to hold in mind.

    python scripts/code_sizes.py                  # modules by lines, then functions over 60 lines
    python scripts/code_sizes.py --functions 40   # a lower bar for "long"
    python scripts/code_sizes.py --all            # every function

Lines are physical lines from a definition's first line (decorators included) to its last. Generated modules
(`_modidx.py`) are listed but marked. Used before and after a restructuring: the two outputs go in the commit
message.
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

GENERATED = {"_modidx.py"}


def functions(tree: ast.AST, prefix: str = ""):
    "(qualified name, first line, number of lines) of every function and method, nested ones included."
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            yield f"{prefix}{node.name}", first, node.end_lineno - first + 1
            yield from functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("package", nargs="?", default=str(Path(__file__).resolve().parents[1] / "aacnb"))
    ap.add_argument("--functions", type=int, default=60, help="list functions longer than this many lines")
    ap.add_argument("--all", action="store_true", help="list every function")
    a = ap.parse_args(argv)
    root = Path(a.package)
    mods, long = [], []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        rel = path.relative_to(root.parent).as_posix()
        mods.append((rel, len(text.splitlines()), path.name in GENERATED))
        for name, first, n in functions(tree):
            if a.all or n > a.functions:
                long.append((n, f"{rel}:{first}", name))
    print(f"{'lines':>6}  module")
    for rel, n, gen in sorted(mods, key=lambda m: -m[1]):
        print(f"{n:>6}  {rel}{'  (generated)' if gen else ''}")
    print(f"\n{'lines':>6}  function ({'all' if a.all else f'over {a.functions} lines'})")
    for n, where, name in sorted(long, reverse=True):
        print(f"{n:>6}  {name}  {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
