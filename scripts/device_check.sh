#!/usr/bin/env bash
# The GPU checks, as one short call on a lent GPU machine (the `device` tool's `run`), in under 10 minutes:
#     bash scripts/device_prep.sh                      # here, once: .whl/ (soundfile) and .devsite/ (tokenizer)
#     run(command="bash scripts/device_check.sh", carry=[".whl", ".devsite"], timeout_s=600)
# What it runs, each step under its own time limit (the limits add up to 9 minutes):
# 1. the CUDA tests (tests/test_gpu.py: fp16/bf16 autocast with the GradScaler, gradient accumulation,
#    checkpoints that load on the CPU, batched == per-clip beam search on the GPU, a bi-encoder step under
#    autocast);
# 2. every training stage of the paper profile at the report's sizes on one GPU (benchmarks/bench_stages.py):
#    seconds per step and peak GPU memory of each Table 2 bi-encoder (one of them is the feature extractor) at a
#    micro-batch of 32 x 10 s, each Table 1 captioner's XE step and the SCST step at batch 64, in fp32, bf16 and
#    fp16 (GradScaler), with the mixed-precision speed-ups;
# 3. with 2 GPUs or more, `fit` on 1 and 2 processes (torchrun, NCCL) for CNN14 + BERT-base at a global batch of
#    64 x 10 s in bf16 (benchmarks/bench_ddp.py: samples/s and the first step's loss on both); with one GPU, the
#    2-process run on the CPU (gloo) instead, which checks the distributed code on that machine's torch;
# 4. the decoding benchmark on the GPU.
# Logs go to $OUT (the files that come back). Without .whl/.devsite the bi-encoder cases are skipped, and say so
# (soundfile, or a tokenizer, missing); RoBERTa-base's tokenizer is not in .devsite, so that case always is.
set -uo pipefail
OUT=${OUT:-/tmp/aacnb-device}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit 1
fi
[ -d .devsite ] && export PYTHONPATH=$PWD/.devsite:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
ngpu=$(python3 -c "import torch; print(torch.cuda.device_count())")
rc=0
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log" || rc=1
timeout 240 python3 -m benchmarks stages --device cuda 2>&1 | tee "$OUT/bench_stages.log" || rc=1
if [ "$ngpu" -ge 2 ]; then
    timeout 90 python3 -m benchmarks ddp --device cuda --nproc 1 2 --model retrieval --audio cnn14 --text bert-base \
        --batch-size 64 --seconds 10 --steps 6 --amp bf16 2>&1 | tee "$OUT/bench_ddp.log" || rc=1
else
    echo "$ngpu GPU: fit on 2 GPU processes needs 2 GPUs; 2 CPU processes (gloo) instead" | tee "$OUT/bench_ddp.log"
    timeout 90 python3 -m benchmarks ddp --model captioner --nproc 1 2 --batch-size 16 --steps 4 --threads 4 2>&1 \
        | tee -a "$OUT/bench_ddp.log" || rc=1
fi
timeout 120 python3 -m benchmarks decoding --device cuda --threads 16 2>&1 | tee "$OUT/bench_decoding.log" || rc=1
exit $rc
