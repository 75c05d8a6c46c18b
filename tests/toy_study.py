"""A study at toy size for end-to-end tests: 20 + 8 + 4 synthetic clips, one retrieval system, the feature extractor
and one captioner, a few optimiser steps each (tests/test_kill_resume.py, tests/test_lessons.py)."""
from pathlib import Path

import yaml


def toy_profile(path: Path, name: str, corpus: str, retrieval: tuple[str, str] = ("cnn14_bertm", "CNN14 + BERT-medium"),
                pretrain_epochs: int = 2, xe_swa_epochs: int = 2, scst_epochs: int = 2,
                description: str = "a toy study") -> Path:
    "Write the toy profile YAML to `path`: `retrieval` is its one system (name, paper row); `corpus` its data root."
    raw = {
        "name": name, "description": description, "device": "cpu", "seed": 0, "num_threads": 1,
        "data": {"synthetic": True, "root": corpus, "n_clips": 20, "n_audiocaps": 8, "n_macs": 4,
                 "clip_seconds": [3.0, 3.0]},
        "retrieval": {"embed_dim": 16, "pretrain": {"epochs": pretrain_epochs, "lr": 1e-3, "batch_size": 8},
                      "finetune": {"epochs": 1, "lr": 1e-3, "batch_size": 16}, "eval_batch_size": 32,
                      "systems": [{"name": retrieval[0], "paper": retrieval[1], "audio": "cnn14",
                                   "text": "bert-tiny", "overrides": {"width": 0.0625}}],
                      "ensembles": []},
        "feature_extractor": {"audio": "cnn14", "text": "bert-tiny", "overrides": {"width": 0.0625},
                              "train": {"epochs": 1, "lr": 1e-3, "batch_size": 16}},
        "captioning": {"xe": {"epochs": 2, "lr": 2e-3, "batch_size": 16, "swa_epochs": xe_swa_epochs},
                       "scst": {"epochs": scst_epochs, "lr": 5e-5, "batch_size": 16, "swa_epochs": 1},
                       "select": "swa", "beam_size": 2, "max_len": 8, "metrics": ["cider_d"],
                       "systems": [{"name": "transformer2_s0", "paper": "two-layer Transformer",
                                    "decoder": "transformer", "num_layers": 2, "seed": 0,
                                    "overrides": {"d_model": 16, "nhead": 2, "dim_feedforward": 32,
                                                  "enc_hidden": 16}}],
                       "ensembles": []},
        "param_counts": {"paper_configs": False},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path
