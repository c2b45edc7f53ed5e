#!/usr/bin/env bash
# Issue 23 §3's GPU measurements in one call, for a session that is lent a CUDA machine (its
# device time is short: one prepared run, not a session of trials). About 8 minutes on an H200:
#   1. bench/check_cuda.py --only throughput: 200 scans of 640² through `xai attribute`
#      (U-Net++ efficientnet-b5, 30 steps), with and without the read-ahead/write-behind threads:
#      images per minute, GPU utilisation, compute share of the wall (goal >= 90%);
#   2. bench/bench_cam.py --device cuda --only scorecam --exact: ScoreCAM at 256² effb5
#      `encoder_last`, grad-cam's default against ours, screened and exact (goal >= 5x).
#
# The device image has torch, transformers, timm and most of the stack, not smp, grad-cam and a
# few others (.library/device/KINDS.md lists it). Prepare their wheels here, once, in the repo root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     segmentation-models-pytorch==0.6.0 ttach==0.0.3 zennit==0.5.1 jsonschema jsonschema-specifications \
#     referencing rpds-py pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection \
#     typing-extensions typer==0.29.2 captum==0.9.0
#   .venv/bin/python -m pip wheel -q --no-deps -w .whl grad-cam==1.5.7     # an sdist only
# (about 4 MB), then run, with the device tool: command "bash bench/gpu_round.sh", carry [".whl"],
# timeout_s 600. The logs come back under $OUT; put the numbers in the README's `xai cam` and
# Operations sections.
#   3. `bash bench/gpu_round.sh ig` (a second call, about 2 minutes, if device time is left): the adaptive
#      IG tests on CUDA (the points kept on the device, the map equal to the CPU's) and
#      bench/check_ig_bookkeeping.py: the quadrature's own work per point kept on the CPU and on the
#      GPU, and U-Net++ efficientnet-b5's pass time against its rows (1 to 128) at 256² and 640²:
#      where more rows cost no more, each adaptive round costs a pass whatever its points (README,
#      "Steps", and the closing note of issue 23 for what to do with the knee).
# Parts run in the order given: `bash bench/gpu_round.sh throughput scorecam ig` runs all three.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-round-out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_round: the wheels in .whl/ did not install (see above)" >&2; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, transformers, segmentation_models_pytorch as smp, pytorch_grad_cam; \
print('torch', torch.__version__, 'transformers', transformers.__version__, 'smp', smp.__version__)" \
    | tee -a "$out/gpu.txt"
for part in "${@:-throughput scorecam}"; do
  for p in $part; do
    case $p in
      throughput) timeout 390 python3 bench/check_cuda.py --only throughput 2>&1 | grep -v "made in" \
                    | tee "$out/throughput.log" ;;
      scorecam) timeout 150 python3 bench/bench_cam.py --device cuda --only scorecam --exact 2>&1 \
                    | tee "$out/scorecam.log" ;;
      ig) XAI_TEST_CUDA=1 timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_adaptive_quadrature.py 2>&1 \
            | tail -5 | tee "$out/ig.log"
          timeout 120 python3 bench/check_ig_bookkeeping.py --device cuda --reps 2 2>&1 | tee -a "$out/ig.log" ;;
      *) echo "gpu_round: unknown part $p (throughput, scorecam, ig)" >&2; exit 2 ;;
    esac
  done
done
