#!/usr/bin/env bash
# Workflow 2: Grad-CAM, Grad-CAM++, Score-CAM and Layer-CAM at the five layer aliases of a
# segmenter (encoder_early, encoder_mid, encoder_last, decoder_last, seg_head): comparison
# figures of the methods and the layers, and the attention mean / std / focus ratio of each.
#
#   examples/cam_methods_layers.sh [MODEL] [IMAGES] [OUT]
#
#   MODEL   default builtin:shapes-seg (U-Net++); `xai cam -m MODEL --list-layers` shows the aliases
#   IMAGES  a folder of scans (default: 2 demo scans written to OUT/images)
#   OUT     default out/cam_compare
#   env     LAYERS, METHODS (space-separated, defaults above), ARCH, DPI (default 150)
#
# Writes OUT/records/<id>.npz (methods x layers maps), OUT/figures/<id>__grid.png (the methods down,
# the layers across),
# OUT/figures/<id>__<method>__<layer>__<target>__overlay.png (one per map: `ls *__gradcam__*` is
# the layer comparison of Grad-CAM, `ls *__encoder_mid__*` the method comparison at encoder_mid),
# OUT/attention.csv and OUT/attention.tsv (mean, std, focus ratio per scan x method x layer).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"

model=${1:-builtin:shapes-seg}
images=${2:-}
out=${3:-out/cam_compare}
mkdir -p "$out"
if [[ -z $images ]]; then
    images=$out/images
    demo_images "$images" segmentation 2
fi
read -r -a layers <<< "${LAYERS:-encoder_early encoder_mid encoder_last decoder_last seg_head}"
read -r -a methods <<< "${METHODS:-gradcam gradcam++ scorecam layercam}"
args=()
for m in "${methods[@]}"; do args+=(--method "$m"); done
for l in "${layers[@]}"; do args+=(--layer "$l"); done
if [[ -n ${ARCH:-} ]]; then args+=(--arch "$ARCH"); fi

# Every method at every layer, in one pass over the images: cam/<method>/<layer> per record.
xai cam -m "$model" "$images" "${args[@]}" -o "$out/records/" --skip-existing

# Comparison figures: one grid per scan (methods x layers), and one overlay per map.
xai render "$out/records" -o "$out/figures" --layout grid --dpi "${DPI:-150}" > /dev/null
xai render "$out/records" -o "$out/figures" --split --style overlay --dpi "${DPI:-150}" > /dev/null

# Attention statistics: mean and std of each map, and the focus ratio (mean inside the
# predicted mask / mean outside), per scan and (rows with stat=mean) over the folder.
xai stats "$out/records" --format csv --summary > "$out/attention.csv"
table "$out/attention.csv" stat=mean method layer mean std focus_ratio > "$out/attention.tsv"
cat "$out/attention.tsv"
