#!/usr/bin/env bash
# Workflow 4: Integrated Gradients for the top 3 classes of Hugging Face classifiers (ViT,
# ConvNeXt) with black, white and noise baselines, drawn as turbo overlays.
#
#   examples/ig_top3_hf.sh [MODELS] [IMAGES] [OUT]
#
#   MODELS  comma-separated checkpoint folders, e.g. vit/,convnext/ (default builtin:shapes-cls)
#   IMAGES  a folder of images (default: 2 demo images written to OUT/images)
#   OUT     default out/ig_top3; each model gets OUT/<model name>/
#   env     STEPS (fixed IG steps; default: adaptive, until |delta| <= 1%), DPI (default 150)
#
# Writes OUT/<name>/records/<id>.npz (attr/integrated_gradients/{black,white,noise}, 3 targets
# each) and OUT/<name>/overlays/<id>__integrated_gradients__<baseline>__<class>__overlay.png.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"

IFS=, read -r -a models <<< "${1:-builtin:shapes-cls}"
images=${2:-}
out=${3:-out/ig_top3}
mkdir -p "$out"
if [[ -z $images ]]; then
    images=$out/images
    demo_images "$images" classification 2
fi

for model in "${models[@]}"; do
    name=$(basename "${model%/}")
    name=${name//[^A-Za-z0-9._-]/_}
    # One IG pass per class of the top 3 and per baseline, batched together; the noise
    # baseline is seeded by --seed and the record id, so reruns give the same maps.
    xai attribute -m "$model" "$images" --target top3 \
        --baseline black --baseline white --baseline noise \
        ${STEPS:+--steps "$STEPS"} -o "$out/$name/records/" --skip-existing
    # |attribution| over the image in the turbo colour map, one figure per baseline x class.
    xai render "$out/$name/records" -o "$out/$name/overlays" --split --style overlay --cmap turbo \
        --dpi "${DPI:-150}" > /dev/null
    echo "$model: $(ls "$out/$name/overlays" | grep -c '\.png$') overlays in $out/$name/overlays" >&2
done
