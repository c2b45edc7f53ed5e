"""xai's recipro-cam against openvino-xai 1.1.0's ReciproCAM and ViTReciproCAM on the same layer and input.

openvino-xai 1.1.0 pins numpy < 2 (through openvino-dev 2024.4), which this project's
environment cannot take, so run this in a venv of its own that also sees the project's
packages:

    python3 -m venv /tmp/ov
    .venv/bin/python -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))" \\
        > /tmp/ov/lib/python3.11/site-packages/zz-xai.pth    # read after its own numpy 1.26
    /tmp/ov/bin/pip install openvino-xai==1.1.0
    PYTHONPATH=. /tmp/ov/bin/python bench/check_reciprocam_openvino.py

openvino-xai runs a torch model natively (hooks; no OpenVINO conversion), offline.
Compared: its ReciproCAM (a CNN; 1x1 masks: xai's `point` kernel) and its ViTReciproCAM
(3x3 Gaussian masks on the patch grid, CLS token kept: xai's `gaussian` kernel), raw
(`embed_scaling=False`: the target logits of the masked feature maps). xai stores those
logits minus the logit of an empty layer, ReLU'd; the script undoes nothing, it applies
the same shift and ReLU to openvino-xai's maps and prints the largest difference relative
to the map's range. Exit 1 above 1e-5.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

TOL = 1e-5


def compare(name, ov_cls, model, ad, layer, x, kernel, **kw) -> float:
    from xaicli.explain.cam import TargetScore
    from xaicli.explain.cams.reciprocam import recipro_scores

    with torch.no_grad():
        raw = {}
        handle = layer.module.register_forward_hook(lambda mod, i, o: raw.setdefault("t", o))
        logits = ad.net(x)
        handle.remove()
    k = logits.shape[1]
    scorers = [TargetScore(torch.eye(k)[t]) for t in range(k)]
    ours, empty = recipro_scores(ad.net, layer, x, raw["t"], scorers, kernel)
    ours = np.maximum(ours - empty[:, None], 0)
    explainer = ov_cls(ad.net, target_layer=kw.pop("target_layer"), embed_scaling=False, **kw)
    theirs = explainer.generate_saliency_map(x.numpy())[0].reshape(k, -1)          # (K, h*w) logits
    theirs = np.maximum(theirs - empty[:, None], 0)
    err = float(np.abs(ours - theirs).max() / max(np.ptp(theirs), 1e-30))
    print(f"{name}: {k} classes x {ours.shape[1]} positions ({(theirs > 0).mean():.0%} above the empty layer), "
          f"map range {np.ptp(theirs):.3g}, max |xai - openvino-xai| / range = {err:.2e}",
          flush=True)
    return err


def main() -> int:
    from importlib.metadata import version

    from openvino_xai.methods import ReciproCAM, ViTReciproCAM

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers_models import save_tiny_vit

    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.layers import layer_table
    from xaicli.models.loader import load_model
    from xaicli.models.preprocess import Preprocessing

    print(f"openvino-xai {version('openvino-xai')}, numpy {np.__version__}, torch {torch.__version__}")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, 2, 1),
                              torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 5)).eval()
    ad = ModelAdapter(LogitsModule(net), "classification", list("abcde"), Preprocessing(size=(32, 32)),
                      torch.device("cpu"))
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    layer = layer_table(ad, (32, 32)).one("model.4")                  # the last conv, 16x16, before its ReLU
    errs = [compare("CNN, ReciproCAM / point", ReciproCAM, net, ad, layer, ad.prepare(image), "point",
                    target_layer="model.4")]
    with tempfile.TemporaryDirectory() as tmp:
        vit = load_model(str(save_tiny_vit(Path(tmp) / "vit")), device="cpu")
        (layer,) = layer_table(vit, (32, 32)).resolve(None)            # layers[-1].layernorm_before
        errs.append(compare("ViT, ViTReciproCAM / gaussian", ViTReciproCAM, None, vit, layer, vit.prepare(image),
                            "gaussian", target_layer="layernorm_before", use_gaussian=True, use_cls_token=True))
    return 0 if max(errs) <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
