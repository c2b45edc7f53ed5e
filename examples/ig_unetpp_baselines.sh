#!/usr/bin/env bash
# Workflow 1: Integrated Gradients on a U-Net++ segmenter with zero, random, blur and mean
# baselines; the focus ratio per baseline, the standard panels, and a batch CSV over a folder.
#
#   examples/ig_unetpp_baselines.sh [MODEL] [IMAGES] [OUT]
#
#   MODEL   default builtin:shapes-seg (U-Net++); your own: an smp save_pretrained folder, or a
#           state dict such as best_model.pth with ARCH=unetplusplus:efficientnet-b5
#   IMAGES  a folder of scans (default: 4 demo scans written to OUT/images)
#   OUT     default out/ig_baselines
#   env     STEPS (fixed IG steps; default: adaptive, until |delta| <= 1%), ARCH, DPI (figures, default 150)
#
# Writes OUT/records/<id>.npz (4 maps each), OUT/batch.csv (one row per scan x baseline plus
# mean/std/median/min/max rows), OUT/focus_by_baseline.tsv, OUT/panels/<id>__signed+overlay.png.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"

model=${1:-builtin:shapes-seg}
images=${2:-}
out=${3:-out/ig_baselines}
mkdir -p "$out"
if [[ -z $images ]]; then
    images=$out/images
    demo_images "$images" segmentation 4
fi
arch=()
if [[ -n ${ARCH:-} ]]; then arch=(--arch "$ARCH"); fi

# One record per scan holding attr/integrated_gradients/{zero,uniform,blur,mean}: "random" is
# the seeded uniform-noise baseline. The target is the logits summed over the predicted mask.
# --skip-existing: a rerun (after new scans arrive, or after an interruption) does only what
# is missing.
xai attribute -m "$model" "${arch[@]}" "$images" \
    --baseline zero --baseline uniform --baseline blur --baseline mean \
    ${STEPS:+--steps "$STEPS"} -o "$out/records/" --skip-existing

# The batch CSV: every statistic per scan x baseline, then the summary rows (stat=mean, ...).
xai stats "$out/records" --format csv --summary > "$out/batch.csv"

# Focus ratio per baseline: mean |attribution| inside the predicted mask / outside, averaged
# over the folder (and the share of |attribution| inside, and IG's relative convergence delta).
table "$out/batch.csv" stat=mean baseline focus_ratio focus_fraction relative_delta > "$out/focus_by_baseline.tsv"
cat "$out/focus_by_baseline.tsv"

# Standard panels: original | map | prediction | ground truth | overlay, one row per baseline.
xai render "$out/records" -o "$out/panels" --style signed --style overlay --dpi "${DPI:-150}" > /dev/null
echo "wrote $out/batch.csv, $out/focus_by_baseline.tsv and $(ls "$out/panels" | grep -c '\.png$') panels in $out/panels" >&2
