"""How closely each model metric of `xai stats` equals its reference, over more images and
larger settings than the tests use: grad-cam's confidence and ROAD metrics, Quantus 0.6's
faithfulness correlation, monotonicity, IROF, max sensitivity, local Lipschitz and random
logit, smooth and efficient MPRT, on the built-in classifier (a Hugging Face ResNet) and segmenter (smp).

    python bench/check_stats_references.py [--images 5]

Prints the largest absolute difference per metric and model (and the reference's
range, for scale); asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5)
    args = ap.parse_args(argv)

    import quantus
    import torch
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from quantus.functions.perturb_func import baseline_replacement_by_mask
    from test_evaluation_metrics import (GRADCAM, IG, case, gradcam_target, quantus_explainer, quantus_score,
                                         run_metric, smooth_maps)

    from xaicli.explain.evaluation.mprt import smooth
    from xaicli.explain.randomization import recompute_function
    from xaicli.models.loader import load_model

    torch.set_num_threads(1)
    np.trapz = np.trapezoid          # Quantus 0.6 on numpy 2.4

    def by_mask(arr, mask, **kw):
        return baseline_replacement_by_mask(arr, np.broadcast_to(mask, arr.shape), **kw)

    diffs: dict = {}

    def note(metric, which, ours, ref):
        d = diffs.setdefault((metric, which), [0.0, np.inf, -np.inf])
        d[0] = max(d[0], abs(ours - ref))
        d[1], d[2] = min(d[1], ref), max(d[2], ref)

    for which, spec in (("cls", "builtin:shapes-cls"), ("seg", "builtin:shapes-seg")):
        model = load_model(spec, device="cpu")
        for seed in range(100, 100 + args.images):
            image, index, region = case(model, seed)
            maps = smooth_maps(image.shape[:2], 1, seed)
            x = model.prepare(image)
            target = [gradcam_target(index, region)]
            got, ctx, group = run_metric("confidence", model, image, index, region, maps)
            m = maps[0]
            cam = ((m - m.min()) / (m.max() - m.min())).astype(np.float32)[None]
            note("confidence_drop", which, got[0]["confidence_drop"],
                 float(DropInConfidence()(x, cam, target, model.forward)[0]))
            got, ctx, group = run_metric("road", model, image, index, region, maps)
            for order, cls in (("morf", ROADMostRelevantFirst), ("lerf", ROADLeastRelevantFirst)):
                ref = []
                for p in range(10, 100, 10):
                    torch.manual_seed(ctx.seed(group[0], f"road/{order}/{p:g}"))
                    ref.append(cls(p)(x, group[0].smap.astype(np.float32)[None], target, model.forward)[0])
                note(f"road_{order}", which, got[0][f"road_{order}"], float(np.mean(np.float32(ref))))
            got, ctx, group = run_metric("faithfulness_correlation", model, image, index, region, maps)
            ref = quantus_score(quantus.FaithfulnessCorrelation(perturb_baseline=0.0, disable_warnings=True,
                                                                return_aggregate=False),
                                model, image, index, region, maps[0], ctx.seed(group[0], "faithfulness_correlation"))
            note("faithfulness_correlation", which, got[0]["faithfulness_correlation"], ref[0])
            step = 1024
            got, ctx, group = run_metric("monotonicity", model, image, index, region, maps, subset_size=step)
            ref = quantus_score(quantus.MonotonicityCorrelation(nr_samples=10, features_in_step=step,
                                                                disable_warnings=True),
                                model, image, index, region, maps[0], ctx.seed(group[0], "monotonicity"))
            note("monotonicity", which, got[0]["monotonicity"], ref[0])
            got, ctx, group = run_metric("irof", model, image, index, region, maps)
            ref = quantus_score(quantus.IROF(perturb_func=by_mask, disable_warnings=True, return_aggregate=False),
                                model, image, index, region, maps[0], 0)
            note("irof", which, got[0]["irof"], ref[0])
            for name, metric, kw in (("max_sensitivity", quantus.MaxSensitivity, {"lower_bound": 0.05}),
                                     ("local_lipschitz", quantus.LocalLipschitzEstimate, {"perturb_std": 0.05})):
                got, ctx, group = run_metric(name, model, image, index, region, [np.zeros(image.shape[:2])],
                                             recorded=GRADCAM[which], samples=5, noise=0.05)
                explain, explain_func = quantus_explainer(group, model)
                ref = quantus_score(metric(nr_samples=5, disable_warnings=True, return_aggregate=False, **kw),
                                    model, image, index, region, explain(model), ctx.seed(group[0], name),
                                    own_channels=True, explain_func=explain_func)
                note(name, which, got[0][name], ref[0])
            rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
            sal = ("attr/saliency/none", {"kind": "attribution", "method": "saliency", "baseline": None})
            got, ctx, group = run_metric("smooth_mprt", model, rgb, index, region, [np.zeros(image.shape[:2])],
                                         recorded=sal, samples=5, seed=5)
            seed_ = ctx.seed(group[0], "smooth_mprt") % 2 ** 32
            intact = smooth(ctx, recompute_function(group[0]), model, np.random.RandomState(seed_))
            ref = quantus_score(quantus.SmoothMPRT(seed=5, nr_samples=5, return_last_correlation=True,
                                                   skip_layers=True, disable_warnings=True),
                                model, rgb, index, region, intact, seed_, own_channels=True,
                                explain_func=quantus.explain, explain_func_kwargs={"method": "Saliency"})
            note("smooth_mprt", which, got[0]["smooth_mprt"], ref[0])
            got, ctx, group = run_metric("efficient_mprt", model, image, index, region, [np.zeros(image.shape[:2])],
                                         recorded=IG, seed=5)
            explain, explain_func = quantus_explainer(group, model)
            ref = quantus_score(quantus.EfficientMPRT(seed=5, complexity_func_kwargs={"n_bins": 100},
                                                      disable_warnings=True),
                                model, image, index, region, explain(model), 0, explain_func=explain_func)
            note("efficient_mprt", which, got[0]["efficient_mprt"], ref[0])
            if which == "cls":
                got, ctx, group = run_metric("random_logit", model, image, index, None, [np.zeros(image.shape[:2])],
                                             recorded=IG)
                explain, explain_func = quantus_explainer(group, model)
                ref = quantus_score(quantus.RandomLogit(num_classes=model.num_classes, disable_warnings=True,
                                                        seed=ctx.seed(group[0], "random_logit") % 2 ** 32),
                                    model, image, index, None, explain(model), 0, explain_func=explain_func)
                note("random_logit", which, got[0]["random_logit"], ref[0])
    print(f"{'metric':26} {'model':5} {'max |ours - ref|':>17} {'reference range':>24}   ({args.images} images)")
    for (metric, which), (d, lo, hi) in diffs.items():
        print(f"{metric:26} {which:5} {d:17.2e} {lo:>11.4g} .. {hi:<11.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
