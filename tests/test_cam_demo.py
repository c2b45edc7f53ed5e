"""On the built-in demo models, whose evidence is known, the Grad-CAM peak lies in it.

`make_sample` draws images with their evidence mask (segmenter: the blobs; classifier:
the object whose colour is the class). 100 fresh seeds, the default layer, the
default target (predicted mask / top class); the peak must fall inside the evidence
on at least 95 of them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

SEEDS = range(5000, 5100)


pytestmark = pytest.mark.usefixtures("one_thread")


def peak_hits(spec: str, task: str, layer: str | None = None, method: str = "gradcam", seeds=SEEDS,
              **options) -> list[bool]:
    """Per seed: does the `method` map's peak, default target, lie in the demo image's evidence?"""
    from xaicli.explain.cam import CamEngine
    from xaicli.explain.targets import resolve_classification, resolve_segmentation
    from xaicli.models.builtin.shapes import make_sample
    from xaicli.models.layers import layer_table
    from xaicli.models.loader import load_model

    ad = load_model(spec, device="cpu")
    first = make_sample(seeds[0], task)[0]
    table = layer_table(ad, ad.input_size(first.shape[:2]))
    engine = CamEngine(ad, table.resolve([layer] if layer else None), [method], **options)
    hits = []
    for seed in seeds:
        img, evidence, _ = make_sample(seed, task)

        def targets(logits):
            if task == "segmentation":
                lg = ad.to_image_size(logits, img.shape[:2])[0]
                return resolve_segmentation(None, ad.labels, (torch.sigmoid(lg[0]) > 0.5).numpy().astype(np.uint8))
            return resolve_classification(None, ad.labels, torch.softmax(logits[0], 0).numpy())

        (cam,) = engine.explain(img, targets)
        m = cam.values[0]
        y, x = np.unravel_index(np.argmax(m), m.shape)
        hits.append(bool(m.max() > 0 and evidence[y, x]))
    return hits


def test_segmenter_gradcam_peak_in_the_blobs():
    hits = peak_hits("builtin:shapes-seg", "segmentation")
    assert np.mean(hits) >= 0.95, f"peak inside the evidence on {sum(hits)}/100"


def test_classifier_gradcam_peak_in_the_object():
    hits = peak_hits("builtin:shapes-cls", "classification")
    assert np.mean(hits) >= 0.95, f"peak inside the evidence on {sum(hits)}/100"
