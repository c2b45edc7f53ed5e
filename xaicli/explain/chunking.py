"""How many samples go through one forward/backward pass, and what to do when that is too many.

Gradient methods push many copies of one image through the model (IG: steps × baselines;
SmoothGrad: noisy samples). One pass with all of them is what Captum does by default;
it is neither the fastest on a CPU (cache: measured 1.6× slower than a chunk of 8 on an
smp U-Net at 192²) nor safe on a GPU (out of memory on large scans). So:

- `activation_bytes` measures what one sample keeps alive for the backward pass (the
  tensors autograd saves), with one probe forward;
- `choose_batch_size` turns that into a chunk: on a CPU, the chunk whose saved
  activations fill about `CPU_CHUNK_BYTES` (cache-friendly, measured), on CUDA as many
  as fit in a fraction of the free memory; always within the free memory;
- `run_chunks` runs the work chunk by chunk and, on an out-of-memory error, halves the
  chunk and retries the same rows instead of crashing.

The CAM engine may reuse all three: they know nothing about Integrated Gradients.
"""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger("xai")

# Measured on a 2-core CPU (bench/bench_ig.py prints the sweep): per-sample time is flat
# to a few % once a chunk holds ~0.25-1 GiB of saved activations, and larger chunks only
# add memory. Small models get more rows per chunk, big ones fewer.
CPU_CHUNK_BYTES = 800 << 20
CPU_MAX_ROWS = 32
CUDA_MAX_ROWS = 256
CUDA_FREE_FRACTION = 0.6       # of free memory, for activations
BACKWARD_FACTOR = 2.0          # a backward pass needs roughly as much again as the saved tensors


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS OOM, or a CPU allocation failure: both are answered by a smaller chunk."""
    from xaicli.models.device import is_oom

    if isinstance(exc, MemoryError) or is_oom(exc):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc).lower()


class SavedBytes:
    """Context manager counting the bytes autograd saves for backward inside it (once per storage)."""

    def __enter__(self) -> "SavedBytes":
        import torch

        self.bytes = 0
        self._seen: set = set()
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def _pack(self, t):
        try:
            key = (t.untyped_storage().data_ptr(), t.dtype)
        except (RuntimeError, NotImplementedError):
            key = None
        if key is None or key not in self._seen:
            if key is not None:
                self._seen.add(key)
            self.bytes += t.numel() * t.element_size()
        return t

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)


def activation_bytes(forward: Callable, sample) -> int:
    """Bytes autograd saves for the backward pass of one sample (one probe forward with grad)."""
    import torch

    x = sample[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad(), SavedBytes() as saved:
        out = forward(x)
    del out
    return int(max(saved.bytes, x.numel() * x.element_size()))


def choose_batch_size(device, per_sample_bytes: int, rows: int, requested: int | None = None) -> int:
    """Rows per pass: the user's `--batch-size`, else from the device and its free memory."""
    from xaicli.models.device import free_memory_bytes

    rows = max(1, int(rows))
    if requested:
        return max(1, min(int(requested), rows))
    need = max(1, int(per_sample_bytes * BACKWARD_FACTOR))
    free = free_memory_bytes(device)
    if device.type == "cuda":
        budget = int((free or 0) * CUDA_FREE_FRACTION)
        bs = min(CUDA_MAX_ROWS, budget // need)
    else:
        bs = min(CPU_MAX_ROWS, CPU_CHUNK_BYTES // max(1, per_sample_bytes))
        if free:
            bs = min(bs, int(free * 0.5) // need)
    return max(1, min(int(bs), rows))


class ChunkRunner:
    """Calls `work(start, stop)` over [0, n) in chunks; halves the chunk on OOM and retries.

    `work` must be all-or-nothing for its rows (accumulate into the caller's totals only
    after it succeeded), since a retried chunk runs again from the start. With `plan`
    set, the first chunk is a single row run under `SavedBytes`, and `plan(bytes)` sets
    the chunk for the rest: the measurement costs no extra forward pass.
    """

    def __init__(self, batch_size: int, device=None, plan: Callable[[int], int] | None = None):
        self.batch_size = max(1, int(batch_size))
        self.device = device
        self.halvings = 0
        self.plan = plan
        self.measured: int | None = None

    def run(self, n: int, work: Callable[[int, int], None]) -> None:
        start = 0
        while start < n:
            measuring = self.plan is not None
            stop = start + 1 if measuring else min(n, start + self.batch_size)
            oom = False
            try:
                if measuring:
                    with SavedBytes() as saved:
                        work(start, stop)
                    self.measured = saved.bytes
                    self.batch_size = max(1, self.plan(saved.bytes))
                    self.plan = None
                else:
                    work(start, stop)
            except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_out_of_memory(exc):
                    raise
                oom = True
            if not oom:
                start = stop
                continue
            # Outside the except block: the traceback (and the chunk's tensors) are gone now.
            self._release()
            if stop - start == 1:
                from xaicli.errors import XaiError

                raise XaiError("out of memory even with one sample per pass; use a smaller --size, "
                               "a smaller image, or --device cpu")
            self.batch_size = max(1, (stop - start) // 2)
            self.halvings += 1
            log.warning("out of memory with %d samples per pass; retrying with %d", stop - start, self.batch_size)

    def _release(self) -> None:
        import gc

        gc.collect()
        if self.device is not None and getattr(self.device, "type", None) == "cuda":
            import torch

            torch.cuda.empty_cache()


class BatchPlanner:
    """The chunk size per input shape across images: measured on the first chunk, kept after OOM halvings.

    `runner(sample, rows, grad=True)` for passes with a backward: the first one for a
    shape measures the saved activations on its first row (no probe pass). Passes
    without grad (`grad=False`) reuse the size, or take the user's / a conservative one.
    """

    def __init__(self, device, requested: int | None = None):
        self.device = device
        self.requested = requested
        self._sizes: dict[tuple, int] = {}

    def runner(self, sample, rows: int, grad: bool = True) -> ChunkRunner:
        key = tuple(sample.shape[1:])
        rows = max(1, rows)
        if self.requested:
            return ChunkRunner(min(self.requested, rows), self.device)
        if key in self._sizes:
            return ChunkRunner(min(self._sizes[key], rows), self.device)
        if not grad:
            return ChunkRunner(min(CPU_MAX_ROWS, rows), self.device)

        def plan(per_sample: int) -> int:
            size = choose_batch_size(self.device, max(per_sample, 1), 1 << 30)
            self._sizes[key] = size
            log.debug("chunk for inputs %s: %d samples per pass (%.0f MiB saved per sample)", key, size,
                      per_sample / 2**20)
            return size

        return ChunkRunner(1, self.device, plan=plan)

    def update(self, sample, runner: ChunkRunner) -> None:
        """After an OOM halving, later images of this shape start at the smaller chunk."""
        if runner.halvings and not self.requested:
            self._sizes[tuple(sample.shape[1:])] = runner.batch_size
