#!/usr/bin/env bash
# Workflow 5: a small grayscale CNN classifier: Integrated Gradients with a uniform-noise
# baseline, drawn as signed maps (red: evidence for the class, blue: against).
#
#   examples/gray_cnn_ig.sh [MODEL] [IMAGES] [OUT]
#
#   MODEL   a one-channel model: TorchScript (torch.jit.save), or a pickled module with
#           TRUST_PICKLE=1. Default: an untrained 1-channel CNN written to OUT/gray_cnn.pt,
#           which shows the mechanics only (its maps explain random weights).
#   IMAGES  a folder of gray images (default: 4 demo scans written to OUT/images)
#   OUT     default out/gray_cnn
#   env     STEPS (fixed IG steps; default: adaptive, until |delta| <= 1%), SAMPLES (uniform baselines averaged, default 4),
#           DPI (default 150)
#
# Writes OUT/records/<id>.npz (attr/integrated_gradients/uniform) and OUT/signed/<id>__signed.png.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"

model=${1:-}
images=${2:-}
out=${3:-out/gray_cnn}
mkdir -p "$out"
if [[ -z $images ]]; then
    images=$out/images
    demo_images "$images" segmentation 4
fi
# The default model is written once: TorchScript files differ byte for byte between saves,
# and the records of an earlier run name the model by its sha256.
if [[ -z $model ]]; then
    model=$out/gray_cnn.pt
fi
if [[ $model == "$out/gray_cnn.pt" && ! -e $model ]]; then
    "$(xai_python)" - "$model" <<'PY'
import sys, torch
from torch import nn
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(), nn.Linear(16, 2)).eval()
torch.jit.save(torch.jit.script(net), sys.argv[1])
PY
fi
trust=()
if [[ -n ${TRUST_PICKLE:-} ]]; then trust=(--trust-pickle); fi

# IG of the predicted class against a seeded uniform-noise baseline, averaged over SAMPLES draws.
xai attribute -m "$model" "${trust[@]}" "$images" --baseline uniform --baseline-samples "${SAMPLES:-4}" \
    ${STEPS:+--steps "$STEPS"} -o "$out/records/" --skip-existing

# Signed maps: the channel sum with its sign, centred at 0, red for and blue against.
xai render "$out/records" -o "$out/signed" --style signed --signed-cmap RdBu_r --dpi "${DPI:-150}" > /dev/null
echo "wrote $(ls "$out/signed" | grep -c '\.png$') signed maps in $out/signed" >&2
