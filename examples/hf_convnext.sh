#!/usr/bin/env bash
# Workflow 3: a Hugging Face ConvNeXt checkpoint folder (save_pretrained of the model and its
# image processor): predictions as JSON with the top 3 classes, Grad-CAM, Grad-CAM++ and
# Layer-CAM maps for every class, and a batch table.
#
#   examples/hf_convnext.sh [MODEL] [IMAGES] [OUT]
#
#   MODEL   a checkpoint folder (config.json, model.safetensors, preprocessor_config.json);
#           default builtin:shapes-cls (a small HF ResNet naming an object's colour)
#   IMAGES  a folder of images (default: 4 demo images written to OUT/images)
#   OUT     default out/hf_convnext
#   env     LAYER (default: the last stage), DPI (default 150)
#
# Writes OUT/predictions.jsonl (id, predicted_class, confidence, top3, probabilities, ...),
# OUT/records/<id>.npz (cam/<method>/<layer>, one map per class), OUT/table.csv (one row per
# image x method x class), OUT/figures/<id>__grid.png (rows: classes, columns: methods).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"

model=${1:-builtin:shapes-cls}
images=${2:-}
out=${3:-out/hf_convnext}
mkdir -p "$out"
if [[ -z $images ]]; then
    images=$out/images
    demo_images "$images" classification 4
fi
layer=()
if [[ -n ${LAYER:-} ]]; then layer=(--layer "$LAYER"); fi

# Predictions: one JSON object per image, written atomically to the file.
xai predict -m "$model" --json "$images" -o "$out/predictions.jsonl"

# Three CAM methods, one map per class (--target all), at the last stage unless LAYER is set.
xai cam -m "$model" "$images" --method gradcam --method gradcam++ --method layercam "${layer[@]}" \
    --target all -o "$out/records/" --skip-existing

# The batch table, and a grid per image: one row per class, one column per method.
xai stats "$out/records" --format csv > "$out/table.csv"
xai render "$out/records" -o "$out/figures" --layout grid --dpi "${DPI:-150}" > /dev/null
table "$out/table.csv" id target method mean focus_ratio >&2
