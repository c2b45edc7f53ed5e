"""CAM methods (`xai cam`): one module per method, each one step of one pipeline.

The pipeline (`explain/cam.py`, grad-cam's BaseCAM idea) fixes the steps for every
method: hooks on the layers, one forward, the targets' scores, one backward per
target into the layer outputs (a second one for `second_order` methods), then per
method and layer the map before ReLU, ReLU, resize to the model input, and the
record's meta. A method overrides one step:

- `channel_weights(step)` → (T, C): the map is Σ_c w_tc · A_c (or its first principal
  component under --eigen-smooth); ScoreCAM, AblationCAM. The default is grad-cam's
  weights of the `reference` class (Grad-CAM, Grad-CAM++, XGrad-CAM declare nothing else);
- `cam_image(step)` → (T, h, w) before ReLU, for maps that are not a channel sum
  (HiRes-CAM, Layer-CAM, the eigen methods);
- `scorers(engine, logits, targets)`: other scores to differentiate (FinerCAM);
- `input_map(step)` → (T, C, H, W) at the model input for `input_channels` methods, whose
  map is signed and per input channel (Guided Grad-CAM), stored as attr/<name>/<layer>;
- `combine(step)` for `whole_model` methods: one map from the model or from other
  methods' per-layer maps (FullGrad, RefineCAM).

`step` is a `cam.LayerStep` or `cam.ModelStep`: numpy activations and gradients at the
layer's resolution, and helpers for the shared arithmetic.
"""

from __future__ import annotations

from typing import ClassVar

from xaicli.explain.registry import Method, Option


class CamMethod(Method):
    family = "cam"
    reference_package = "pytorch_grad_cam"
    checked = "equal to 1e-5 after min-max scaling"
    second_order: ClassVar[bool] = False        # differentiates twice (Hessian-vector products in step.hvp)
    per_channel: ClassVar[bool] = False         # one forward per channel (batched by memory)
    target_independent: ClassVar[bool] = False  # the same map for every target
    normalised: ClassVar[bool] = False          # min-max scaled by construction: no raw map
    whole_model: ClassVar[bool] = False         # one map per image, not per --layer: implements combine
    reads_layers: ClassVar[bool] = False        # a whole-model method that reads every --layer itself (LeGrad)
    requires: ClassVar[tuple[str, ...]] = ()    # per-layer methods whose maps `combine` reads
    min_layers: ClassVar[int] = 1               # distinct layers it needs (--method all skips it otherwise)
    input_channels: ClassVar[bool] = False      # a signed map per input channel: implements input_map

    def scorers(self, engine, logits_row, targets) -> list | None:
        """Scores to differentiate instead of the targets' (None: the targets')."""
        return None

    def channel_weights(self, step):
        """(T, C) weights of the layer's channels, one row per target. By default grad-cam's own
        (`get_cam_weights` of the class named in `reference`): such a method declares only that."""
        return self.grad_cam(step)

    def cam_image(self, step):
        """(T, h, w) map before ReLU at the layer's resolution: the weighted channel sum, target by target."""
        import numpy as np

        w = self.channel_weights(step)
        return np.concatenate([step.weighted(w[t:t + 1]) for t in range(step.targets)])

    def input_map(self, step):
        """`input_channels` methods: the (T, C, H, W) map at the model input's size (signed, per channel,
        like an attribution; Guided Grad-CAM). It is resized to the image per channel and stored as
        attr/<name>/<layer> (kind attribution, family cam, its layer in the meta): the record's cam/
        maps are (T, H, W) magnitudes."""
        raise NotImplementedError

    def combine(self, step) -> tuple[str, str | None, object]:
        """Whole-model methods: (layer name for the key, module path for the meta, (T, H, W) map)."""
        raise NotImplementedError

    def grad_cam(self, step, cls: str | None = None):
        """(T, C) weights from grad-cam's own get_cam_weights of class `cls`, row by row, as one
        grad-cam call per image computes them."""
        import numpy as np

        weights = step.engine.grad_cam(cls or self.reference).get_cam_weights
        return np.concatenate([weights(None, None, None, step.acts, step.grads[t:t + 1])
                               for t in range(step.targets)])


AUG_SMOOTH = Option("aug_smooth", bool, False, help="Average over horizontal flips x brightness 0.9/1/1.1 "
                    "(grad-cam's test-time augmentation; 6x the cost). Maps are then min-max scaled before "
                    "averaging.")
EIGEN_SMOOTH = Option("eigen_smooth", bool, False, help="Replace the channel sum by the first principal component "
                      "of the weighted activations (thin SVD).")
OPTIONS = (AUG_SMOOTH, EIGEN_SMOOTH)
