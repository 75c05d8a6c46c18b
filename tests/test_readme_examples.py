"""The README's Python examples run as written, each in a fresh interpreter, against the tiny study's outputs.

The examples read what `make reproduce` leaves behind: `reports/runs/tiny/...` (through `aacnb.core.reports_root()`)
and the generated corpus under `data/corpus` (through `data_root()`). They honour `$AACNB_REPORTS` and `$AACNB_DATA`,
so a study finished elsewhere can be pointed at: those two variables are read when this module is imported, before
the autouse fixture of conftest.py gives every test its own empty roots. An example that writes files (`models/`)
writes them into a temporary working folder, never into the checkout or the study.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
README = CHECKOUT / "README.md"
# where the finished tiny study lives: what the examples will see as reports_root() and data_root()
REPORTS = Path(os.environ.get("AACNB_REPORTS") or CHECKOUT / "reports").expanduser().resolve()
DATA = Path(os.environ.get("AACNB_DATA") or CHECKOUT / "data").expanduser().resolve()
# the study outputs the examples read; absent on a fresh clone until `make reproduce` has run
NEEDED = [REPORTS / "runs" / "tiny" / "ret_cnn14_bertb_finetune" / "metrics.json",
          REPORTS / "runs" / "tiny" / "cap_transformer2_s0_scst" / "metrics.json",
          DATA / "corpus" / "CLOTHO_v2.1" / "clotho_audio_files" / "evaluation"]

_FENCE = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)


def python_blocks(markdown: str) -> list[str]:
    "The bodies of the ```python fenced blocks of `markdown`, in order."
    return [m.group(1) for m in _FENCE.finditer(markdown)]


def test_python_blocks_are_found():
    blocks = python_blocks("text\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\nprint(y)\n```\n")
    assert blocks == ["x = 1\n", "y = 2\nprint(y)\n"]
    assert python_blocks(README.read_text(encoding="utf-8")), "README.md has no ```python block to test"


@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(python_blocks(README.read_text(encoding="utf-8")))))
def test_readme_python_example_runs(number, tmp_path):
    missing = [str(p) for p in NEEDED if not p.exists()]
    if missing:
        pytest.skip(f"the README's examples need the tiny study's outputs: run `make reproduce` first "
                    f"(or set AACNB_REPORTS/AACNB_DATA to a finished study); missing: {', '.join(missing)}")
    code = python_blocks(README.read_text(encoding="utf-8"))[number]
    script = tmp_path / f"readme_example_{number}.py"
    script.write_text(code, encoding="utf-8")
    work = tmp_path / "work"   # the examples' cwd: what they write (models/) lands here
    work.mkdir()
    env = {**os.environ, "AACNB_REPORTS": str(REPORTS), "AACNB_DATA": str(DATA), "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(CHECKOUT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, (f"README.md python block {number} failed (exit {proc.returncode}):\n{code}\n"
                                  f"--- stderr ---\n{proc.stderr[-4000:]}")
