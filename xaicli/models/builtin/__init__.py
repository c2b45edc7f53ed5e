"""The built-in demo models, trained on synthetic images whose answer is known.

`shapes-seg`: U-Net++ (smp) that segments bright blobs on a noisy gray background.
`shapes-cls`: ResNet (transformers) that names the colour of the one object in an
image: red, green or blue (its shape is random, the background gray noise; why not a
ConvNeXt: see train.py). `shapes.make_sample` draws both kinds with their
evidence masks; `train.py` re-creates the weights deterministically.
"""

from __future__ import annotations

from pathlib import Path

from xaicli.errors import XaiUsageError

HERE = Path(__file__).parent
NAMES = ("shapes-seg", "shapes-cls")
# For the README's model table (models/formats/readme.py): what each is, and notes.
DESCRIPTIONS = {
    "shapes-seg": ("U-Net++ (smp, tu-resnet10t) segmenting bright blobs", "demo, 96×96 gray"),
    "shapes-cls": ("ResNet (transformers) naming the object's colour: red / green / blue",
                   "demo, 64×64 RGB; a ResNet because ConvNeXt's Grad-CAM has a sign problem (see `xai cam` layers)"),
}


def builtin_path(name: str) -> Path:
    if name not in NAMES:
        raise XaiUsageError(f"builtin:{name} is not a built-in model; use one of "
                            + ", ".join(f"builtin:{n}" for n in NAMES))
    return HERE / name
