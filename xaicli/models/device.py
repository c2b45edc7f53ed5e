"""`--device auto|cpu|cuda[:N]|mps` to a torch.device, with errors a user can act on."""

from __future__ import annotations

from xaicli.errors import XaiUsageError


def resolve_device(name: str = "auto"):
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
