"""Score-CAM (Wang et al. 2020): channels weighted by the softmax of the target score of the masked input.

The passes (one per channel, every target per pass, chunked masks, screening) are in
`_scorecam.py`; this module declares the method and plugs its weights into the pipeline.
"""

from __future__ import annotations

from xaicli.explain.cams import CamMethod
from xaicli.explain.registry import Option

EXACT = Option(
    "scorecam_exact", bool, None, flags=("--scorecam-exact/--scorecam-screen",), show_default=False,
    help="ScoreCAM: score every channel in float32, as grad-cam does, or first estimate every channel in "
         "bfloat16 at a quarter size and score exactly only the channels that move the map. Default: the screen "
         "where bfloat16 is fast (CUDA; CPUs with AMX, for model inputs from 128x128), exact elsewhere (there "
         "bfloat16 is several times slower, or the passes too cheap to save). "
         "The screened map correlates with grad-cam's at >= 0.998.")

CHANNELS = Option(
    "scorecam_channels", int, None, min=1, show_default=False,
    help="ScoreCAM: score only the K channels of highest activation variance (Faster Score-CAM, Wang et al. "
         "2020); the others get weight 0 and the softmax runs over the K. Default: every channel. The map's "
         "meta says which were kept; bench/bench_scorecam_channels.py measures the correlation to full ScoreCAM.")


class ScoreCAM(CamMethod):
    name = "scorecam"
    aliases = ("score-cam",)
    summary = "channel weights: softmax of the target score of the masked input"
    reference = "ScoreCAM"
    checked = "Pearson >= 0.99 after min-max scaling"
    notes = ("ours: one pass per channel for all targets, chunked masks, the chunk timed to the fastest per run "
             "(within memory), screening where bfloat16 is fast")
    options = (EXACT, CHANNELS)
    gradients = False
    per_channel = True
    order = 100

    def channel_weights(self, step):
        import torch

        from xaicli.explain.cams._scorecam import scorecam_weights

        exact = step.options["scorecam_exact"]
        x = step.x
        exact = not screens_by_default(step.engine.adapter.device, tuple(x.shape[-2:])) if exact is None else bool(exact)
        keep = top_variance(step.acts, step.options["scorecam_channels"])
        acts = step.acts if keep is None else step.acts[:, keep]
        w, info = scorecam_weights(step.engine.adapter.net, x, torch.from_numpy(acts).to(x.device),
                                   step.scorers, batch_size=step.batch_size(), progress=step.engine.progress,
                                   exact=exact, desc=f"scorecam {step.layer.name}", screen_size=_screen_size(step),
                                   screen_net=None if exact else _screen_net(step), plan=step.chunk_plan())
        if keep is not None:      # Faster Score-CAM: the channels left out weigh nothing
            import numpy as np

            full = np.zeros((w.shape[0], step.acts.shape[1]), dtype=w.dtype)
            full[:, keep] = w
            w = full
            info["kept_channels"] = [int(c) for c in keep]
        step.note(scorecam=info)
        return w


SCREEN_LEAST_CPU = 128 * 128   # model-input pixels from which a CPU screens (see screens_by_default)


def screens_by_default(device, hw: tuple[int, int]) -> bool:
    """Whether ScoreCAM screens when neither --scorecam-exact nor --scorecam-screen is given.

    By the hardware, not by a timing probe, so that a run's maps do not follow the machine's
    load: only where bfloat16 is fast (CUDA, AMX CPUs; elsewhere the screen made ScoreCAM 5.3x
    slower than grad-cam's, FIELD-NOTES), and on a CPU only from 128² model-input pixels. Below
    that a pass costs so little that the screen's bookkeeping and its bfloat16 copy of the model
    outweigh the passes it saves. Measured on a 2-core AMX Xeon, per image: builtin:shapes-cls
    (64², 64 channels, 0.5 ms a pass) 0.05–0.13 s screened against 0.03–0.06 s exact;
    builtin:shapes-seg (96²) 0.58–1.19 s against 0.85–1.04 s, a wash; from 128² on (smp
    U-Net++/Unet, HF ConvNeXt and ViT) 1.4–8x faster than exact.
    """
    from xaicli.models.device import fast_bfloat16

    if not fast_bfloat16(device):
        return False
    return device.type != "cpu" or hw[0] * hw[1] >= SCREEN_LEAST_CPU


def top_variance(acts, k: int | None):
    """Indices of the k channels of `acts` (1, C, h, w) with the largest spatial variance, in channel
    order (None: keep all)."""
    import numpy as np

    if k is None or k >= acts.shape[1]:
        return None
    var = acts[0].reshape(acts.shape[1], -1).var(1)
    return np.sort(np.argsort(-var, kind="stable")[:k])


def _screen_net(step):
    """The bfloat16 copy ScoreCAM screens with, made once per engine."""
    cache = step.engine.cache
    if "scorecam_twin" not in cache:
        from xaicli.explain.cams._scorecam import screening_copy

        cache["scorecam_twin"] = screening_copy(step.engine.adapter.net)
    return cache["scorecam_twin"]


def _screen_size(step) -> tuple[int, int] | None:
    """ScoreCAM's screening input: a quarter of the model's size, a multiple of what the model needs."""
    mult = max(1, int(getattr(step.engine.adapter.preprocessing, "multiple", 1) or 1))
    h, w = step.x.shape[-2:]
    sh, sw = max(mult, (h // 4) // mult * mult), max(mult, (w // 4) // mult * mult)
    return (sh, sw) if (sh, sw) != (h, w) else None
