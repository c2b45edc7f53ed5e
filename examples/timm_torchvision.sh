#!/usr/bin/env bash
# Workflow 6: timm and torchvision classifiers, each with its own preprocessing (timm's data
# config, torchvision's weights transforms: resize, centre crop), through one pipe:
# predict | attribute | cam | stats, and the figures.
#
#   examples/timm_torchvision.sh [MODELS] [IMAGES] [OUT]
#
#   MODELS  comma-separated: a timm export folder (timm.models.save_for_hf), or FILE@ARCH for a
#           state dict, e.g. resnet50.pth@torchvision:resnet50 or best.pth@timm:convnext_tiny.
#           Default: two untrained models written to OUT/models (a timm test_efficientnet folder and
#           a torchvision resnet18 state dict), which show the mechanics only.
#   IMAGES  a folder of images (default: 4 demo images written to OUT/images)
#   OUT     default out/timm_torchvision
#   env     STEPS (IG steps, default 32), DPI (default 150)
#
# Writes, per model NAME (the folder's or file's name): OUT/NAME/records.tar (pred, attr/
# integrated_gradients/black, cam/gradcam/last), OUT/NAME/stats.csv, OUT/NAME/figures/*.png.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"

models=${1:-}
images=${2:-}
out=${3:-out/timm_torchvision}
mkdir -p "$out"
if [[ -z $images ]]; then
    images=$out/images
    demo_images "$images" classification 4
fi
if [[ -z $models ]]; then
    models="$out/models/timm_effnet,$out/models/resnet18.pth@torchvision:resnet18"
    if [[ ! -e $out/models/resnet18.pth ]]; then   # written once: records name their model by its sha256
        "$(xai_python)" - "$out/models" <<'PY'
import sys, torch, timm, torchvision
from timm.models import save_for_hf
torch.manual_seed(0)
save_for_hf(timm.create_model("test_efficientnet", num_classes=3).eval(), f"{sys.argv[1]}/timm_effnet",
            safe_serialization=True, model_config={"label_names": ["red", "green", "blue"]})
torch.save(torchvision.models.resnet18(weights=None, num_classes=3).state_dict(), f"{sys.argv[1]}/resnet18.pth")
PY
    fi
fi

IFS=, read -r -a specs <<< "$models"
for spec in "${specs[@]}"; do
    model=${spec%@*}
    arch=()
    if [[ $spec == *@* ]]; then arch=(--arch "${spec##*@}"); fi
    name=$(basename "${model%/}")
    name=${name%.*}
    mkdir -p "$out/$name"
    # One pipe: later commands take the model (and --arch) from the records.
    xai predict -m "$model" "${arch[@]}" "$images" \
        | xai attribute --steps "${STEPS:-32}" \
        | xai cam --method gradcam --layer last \
        | tee "$out/$name/records.tar" \
        | xai stats --format csv > "$out/$name/stats.csv"
    xai render "$out/$name/records.tar" -o "$out/$name/figures/" --dpi "${DPI:-150}" > /dev/null
    echo "$name: $(ls "$out/$name/figures" | grep -c '\.png$') figures, stats in $out/$name/stats.csv" >&2
done
