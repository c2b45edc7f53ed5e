"""Attribution methods (`xai attribute`): one module per method, each a job for the shared engine.

A method subclasses AttributionMethod. A gradient-path method returns, from `job`, one
`integrated_gradients.Job` per image (and per baseline if it takes one): the paths
whose gradients it needs; every job of an image runs in shared, chunked
forward/backward passes (`integrated_gradients.attribute`). Any other method
(perturbation: occlusion; its own backward rules) implements `compute(step)` and gets
the model as a batched, chunked forward (`attribute.AttributionStep.scores`). The engine
(`explain/attribute.py`) makes the baselines and stores each map with its meta; `stats
--randomize` redoes a map from that meta through the same path.

The engine's own options are declared here, once: the CLI builds `xai attribute`'s
options from them and from each method's `options`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from xaicli.errors import XaiUsageError
from xaicli.explain import quadrature as quad
from xaicli.explain.baselines import KINDS
from xaicli.explain.registry import Method, Option

FIRST_TRY = 16           # adaptive runs: the first try when --steps is not given (capped at --max-steps)
DEFAULT_TOLERANCE = 0.01   # without --steps and --tolerance: |delta| <= 1% of |S(x) - S(x')|
DEFAULT_ACCURACY = 0.01    # adaptive quadrature: estimated relative L2 error of the map
MIN_BLUR_SIGMA = 1 / 6   # below, the blur's radius round(3 sigma) is 0: the baseline is the image, every map 0


class AttributionMethod(Method):
    family = "attribution"
    baseline: ClassVar[bool] = False   # one map per --baseline, measured against it
    integral: ClassVar[bool] = False   # a path integral: --steps, --quadrature, --tolerance apply; delta stored

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")

    def job(self, x, baseline, options: dict[str, Any], key: str):
        """The gradient engine's Job for the unit image `x` (1, C, H, W): `baseline` is (K, C, H, W)
        for a method that takes one (else None), `key` the record id that seeds random draws.
        None: the method computes its own map in `compute`."""
        return None

    def compute(self, step):
        """The (T, C, H, W) map of a method that is not a gradient path, from an
        attribute.AttributionStep: `step.scores(batch)` runs the model batched and chunked
        (perturbation methods); `step.forward`, `step.adapter` give the model itself."""
        raise NotImplementedError(f"{self.name}: implement job() or compute()")

    def meta(self, options: dict[str, Any]) -> dict[str, Any]:
        """What the map's meta records about this method beyond the engine's figures."""
        return self.option_meta(options)


def _finite(flag: str, example: str):
    def check(value: float) -> None:
        if not math.isfinite(value):
            raise XaiUsageError(f"{flag} {value}: {example}")
    return check


def _blur_sigma(value: float) -> None:
    _finite("--blur-sigma", "use a finite sigma in pixels, e.g. 4, or omit it for 1/16 of the image's shorter "
            "side")(value)
    if value < MIN_BLUR_SIGMA:
        raise XaiUsageError(f"--blur-sigma {value:g}: below 1/6 px the blur leaves the image unchanged, so every "
                            "map would be 0; use at least 0.17, or omit it for 1/16 of the image's shorter side")


BASELINE = Option(
    "baseline", str, None, multiple=True, flags=("--baseline", "-B"), show_default=False,
    choices=lambda: list(KINDS),
    help="Baseline of the methods that take one: " + ", ".join(f"{k} ({v})" for k, v in KINDS.items())
         + ", or an image / .npy file of the image's size (uint8, uint16 or floats in [0, 1]). Repeatable: one map "
         "each (files sharing a stem get a path hash in the key).")
BASELINE_SAMPLES = Option("baseline_samples", int, 1, min=1,
                          help="Random baselines (noise, uniform): average over this many draws.")
BLUR_SIGMA = Option("blur_sigma", float, None, show_default=False, check=_blur_sigma,
                    help="Blur baseline sigma in image pixels, finite and >= 1/6 (default: 1/16 of the shorter "
                         "side).")
SEED = Option("seed", int, 0, help="Seed of the random baselines and of every method's random draws (mixed with "
                                   "the record id: reruns are identical).")
NOISE_STD = Option("noise_std", float, 0.15, min=0.0,
                   check=_finite("--noise-std", "use a finite std relative to the image's value range, e.g. 0.15"),
                   help="Noise std relative to the image's value range (max - min): the noise baseline and the "
                        "methods that add noise.")
SAMPLES = Option("samples", int, 10, min=1, help="Noisy copies per image (SmoothGrad and its kind).")
STEPS = Option("steps", int, None, flags=("--steps", "-n"), min=1, show_default=False,
               help="Path-integral steps (quadrature nodes): a fixed count, Gauss-Legendre unless --quadrature says "
                    f"otherwise. With --tolerance: the first try of the doubling (default {FIRST_TRY}, at most "
                    "--max-steps). Default: the adaptive quadrature chooses the points.")
QUADRATURE = Option("quadrature", str, None, choices=lambda: [quad.ADAPTIVE, *quad.RULES], show_default=False,
                    help=f"{quad.ADAPTIVE} (the default without --steps: points where the map still changes, until "
                         "--accuracy and --tolerance hold), or a fixed rule: " + ", ".join(quad.RULES[:-1])
                         + " or " + quad.RULES[-1] + " (gausslegendre with --steps, as Captum).")
ACCURACY = Option("accuracy", float, DEFAULT_ACCURACY, min=0.0,
                  check=_finite("--accuracy", "pass a finite bound such as 0.01"),
                  help="Adaptive quadrature: stop a map when its estimated relative L2 error (how far the last "
                       "halving of each path interval moved it) is at most this. Stored per target.")
TOLERANCE = Option("tolerance", float, None, min=0.0, show_default=False,
                   check=_finite("--tolerance", "every delta meets it, so nothing is checked; pass a finite bound "
                                 "such as 0.01, or omit it for fixed --steps"),
                   help="Completeness bound: a target is done when |delta| <= T * |S(x) - S(x')| (adaptive "
                        "quadrature: and --accuracy holds; a fixed rule: the steps double) or at --max-steps, "
                        "where it is marked converged: false and warned about. Default "
                        f"{DEFAULT_TOLERANCE:g} unless --steps is given alone.")
MAX_STEPS = Option("max_steps", int, 512, min=1, help="Cap of the adaptive steps: no map gets more points.")

OPTIONS = (BASELINE, BASELINE_SAMPLES, BLUR_SIGMA, SEED, STEPS, QUADRATURE, ACCURACY, TOLERANCE, MAX_STEPS,
           NOISE_STD)


def settle(options: dict[str, Any]) -> dict[str, Any]:
    """The engine options checked together and completed (canonical quadrature, the steps default)."""
    out = dict(options)
    if out["quadrature"] is None:
        out["quadrature"] = quad.ADAPTIVE if out["steps"] is None else "gausslegendre"
    try:
        out["quadrature"] = quadrature = quad.canonical(out["quadrature"])
    except ValueError:
        raise XaiUsageError(f"--quadrature {out['quadrature']!r}: use one of "
                            f"{', '.join((quad.ADAPTIVE, *quad.RULES))}") from None
    least = quad.min_steps(quadrature)
    steps, tolerance, max_steps = out["steps"], out["tolerance"], out["max_steps"]
    if tolerance is None and steps is None:
        out["tolerance"] = tolerance = DEFAULT_TOLERANCE
    if quadrature == quad.ADAPTIVE:
        if steps is not None:
            raise XaiUsageError(f"--steps {steps} with --quadrature adaptive: the adaptive quadrature chooses its "
                                "points; drop --steps (cap them with --max-steps), or pick a fixed rule such as "
                                "--quadrature gausslegendre")
        first_cut = 2 * quad.ADAPTIVE_START + 1
        if max_steps < first_cut:
            raise XaiUsageError(f"--max-steps {max_steps}: the adaptive quadrature starts with {first_cut} points; "
                                "raise --max-steps or pass --steps N for a fixed count")
        return out
    if tolerance is not None and max_steps < least:
        raise XaiUsageError(f"--max-steps {max_steps}: {quadrature} needs at least {least} steps")
    if tolerance is not None and steps is not None and steps > max_steps:
        raise XaiUsageError(f"--steps {steps} exceeds --max-steps {max_steps}: with --tolerance the steps start at "
                            "--steps and double up to --max-steps; lower --steps or raise --max-steps")
    if steps is None:
        steps = min(FIRST_TRY, max_steps)
    if steps < least:
        raise XaiUsageError(f"--steps {steps}: {quadrature} needs at least {least}")
    out["steps"] = steps
    return out
