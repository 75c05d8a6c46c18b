__version__ = "0.1.0"

# The one hand-written file in aacnb/ (nbdev's convention: it only updates `__version__` here).
# Public names resolve lazily, so `import aacnb` stays light and does not import torch until it is needed.
_PUBLIC = {
    "Cnn14": "aacnb.encoders",
    "WavegramLogmelCnn14": "aacnb.encoders",
    "build_biencoder": "aacnb.retrieval",
    "build_captioner": "aacnb.captioning",
    "evaluate": "aacnb.metrics",
    "load_audio": "aacnb.audio",
    "log_mel": "aacnb.audio",
    "seed_everything": "aacnb.core",
}


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'aacnb' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))
