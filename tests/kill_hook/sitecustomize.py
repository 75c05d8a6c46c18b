"""Test harness of tests/test_kill_resume.py: SIGKILL this process at a chosen checkpoint of the study.

The test puts this folder on PYTHONPATH and sets AACNB_KILL_AT, so every Python process of the pipeline (the
driver and the notebook kernels it starts) imports this module at start-up; without AACNB_KILL_AT it does nothing.
AACNB_KILL_AT is one of
  save:<path suffix>:<n>   after the n-th checkpoint (aacnb.core.save_torch) written to a path ending in the suffix:
                           the process that wrote it (a notebook kernel) dies, as under the OOM killer
  flush:<file suffix>:<n>  after the n-th flush of an HDF5 file whose name ends in the suffix (a feature cache)
  chunk:<n>                after `aacnb index` wrote its n-th chunk of embeddings (tests/test_index.py)
  marker:<run>             in the driver, as it is about to write <run>/COMPLETE.json: the driver and every process
                           it started die (kill -9 of the pipeline itself)
Before killing, it appends a line to $AACNB_KILL_LOG, so the test can tell that the kill happened where it meant.
"""
import os

_SPEC = os.environ.get("AACNB_KILL_AT", "")


def _die(what: str, tree: bool = False) -> None:
    import signal
    with open(os.environ["AACNB_KILL_LOG"], "a") as f:
        f.write(f"{os.getpid()} {what}\n")
    if tree:
        import psutil
        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
    os.kill(os.getpid(), signal.SIGKILL)


def _install() -> None:
    kind, _, rest = _SPEC.partition(":")
    if kind == "save":
        import aacnb.core as core
        suffix, n = rest.rsplit(":", 1)
        real, seen = core.save_torch, []

        def save_torch(obj, path):
            out = real(obj, path)
            if str(path).endswith(suffix):
                seen.append(path)
                if len(seen) == int(n):
                    _die(f"save {path}")
            return out
        core.save_torch = save_torch
    elif kind == "flush":
        import h5py
        suffix, n = rest.rsplit(":", 1)
        real, seen = h5py.File.flush, []

        def flush(self):
            real(self)
            if self.filename.endswith(suffix):
                seen.append(self.filename)
                if len(seen) == int(n):
                    _die(f"flush {self.filename} ({len(self['features'])} items)")
        h5py.File.flush = flush
    elif kind == "chunk":
        import aacnb.search_index as search_index
        real, seen = search_index.write_chunk, []

        def write_chunk(*a, **kw):
            out = real(*a, **kw)
            seen.append(out)
            if len(seen) == int(rest):
                _die(f"chunk {out}")
            return out
        search_index.write_chunk = write_chunk
    elif kind == "marker":
        import aacnb.core as core
        from pathlib import Path
        real = core.save_json

        def save_json(obj, path, *a, **kw):
            p = Path(path)
            if p.name == "COMPLETE.json" and p.parent.name == rest:
                _die(f"marker {p}", tree=True)
            return real(obj, path, *a, **kw)
        core.save_json = save_json


if _SPEC:
    _install()
