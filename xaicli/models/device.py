"""`--device auto|cpu|cuda[:N]|mps` to a torch.device, with errors a user can act on."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings

from xaicli.errors import XaiUsageError


def full_float32() -> None:
    """Convolutions and matrix products in IEEE float32 on CUDA, not TF32 (cuDNN's default),
    unless XAI_TF32=1.

    TF32 keeps 10 mantissa bits. Measured on an H200 (bench/check_cuda.py): with it a small
    ConvNeXt's IG completeness delta sat at 0.8% of F(x) − F(x′) at any step count, the
    size of `--tolerance 0.01`, which then chases rounding; maps moved 5e-4 of their max
    away from a CPU host's. In float32: delta 6e-7, maps 3e-7 from the CPU's. The cost
    there: none on the ConvNeXt and at 256², but a U-Net++ efficientnet-b5 at 640² took
    0.73 s instead of 0.45 s for 30 steps. Legacy flags: torch 2.14 raises on a mix of
    them with the new `fp32_precision` ones.
    """
    import torch

    if os.environ.get("XAI_TF32") == "1":
        return
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


NO_DETERMINISTIC = "does not have a deterministic implementation"   # torch's warning, warn_only=True


@contextlib.contextmanager
def reproducible(name: str, enabled: bool):
    """Deterministic CUDA kernels inside the block, when `enabled` (a fixed chunk, `-b`) and
    `name` is a CUDA device; previous settings restored after.

    Some CUDA backward kernels (a bilinear resize's, among others) accumulate with atomics in
    no fixed order: on an H200 two runs with the same chunk differed in the last bits (up to
    ~1e-7 of the map's largest value). With deterministic algorithms they were bit-identical
    (the antialiased resize aside: see `adapter.resize`). An op that has no deterministic
    kernel runs anyway; torch's multi-line warnings about it become one line at the end
    naming the ops. The NaN fill of fresh tensors that comes with the setting is a
    debugging aid, switched off.
    """
    if not enabled or _resolve(name).type != "cuda":
        yield
        return
    import torch
    import torch.utils.deterministic as det

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # read when cuBLAS first starts
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              det.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        det.fill_uninitialized_memory = before[2]
    ops = set()
    for w in caught:
        text = str(w.message)
        if NO_DETERMINISTIC in text:
            ops.add(text.split(NO_DETERMINISTIC)[0].strip())
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if ops:
        logging.getLogger("xai").warning("no deterministic CUDA kernel for %s: reruns with -b may differ in "
                                         "the last bits", ", ".join(sorted(ops)))


def resolve_device(name: str = "auto"):
    dev = _resolve(name)
    if dev.type == "cuda":
        full_float32()
    return dev


def _resolve(name: str):
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise XaiUsageError(f"--device {name}: CUDA is not available on this host (no GPU or a CPU-only "
                                "torch); use --device cpu or --device auto")
        if not re.fullmatch(r"cuda(:[0-9]+)?", name):
            raise XaiUsageError(f"--device {name}: not a CUDA device; use cuda or cuda:N, N a GPU index "
                                f"(cuda:0..cuda:{max(0, torch.cuda.device_count() - 1)} here)")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise XaiUsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here; "
                                f"pick cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return dev
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise XaiUsageError("--device mps: Apple MPS is not available on this host; use --device cpu or auto")
        return torch.device("mps")
    raise XaiUsageError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps")


def is_oom(exc: BaseException) -> bool:
    """A CUDA/MPS out-of-memory error, which batching answers by halving the batch."""
    import torch

    if isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory_bytes(device) -> int | None:
    """Free memory on `device`: the CUDA allocator's view, or available RAM for the CPU."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def fast_bfloat16(device) -> bool:
    """Whether bfloat16 convolutions run several times faster than float32 on `device`: CUDA, or a
    CPU with AMX tiles (oneDNN's bfloat16 kernels use them). Read from the hardware, never timed.

    Measured on a 2-core AMX Xeon, one thread, per sample of a no-grad forward: bfloat16
    channels-last at full size 0.22–0.35× float32's time on smp U-Net++/Unet (efficientnet-b0/b5,
    resnet18/50, 128²–256²), at a quarter of the size 0.05–0.10×. Its user and the reasons for
    not timing: `explain.cams.scorecam.screens_by_default`.
    """
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    import torch

    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except Exception:        # a private helper: gone or failing in another torch means "not known fast"
        return False
