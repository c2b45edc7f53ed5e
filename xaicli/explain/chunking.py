"""How many samples go through one forward/backward pass, and what to do when that is too many.

Gradient methods push many copies of one image through the model (IG: steps × baselines;
SmoothGrad: noisy samples). One pass with all of them is what Captum does by default;
it is neither the fastest on a CPU nor safe on a GPU (out of memory on large scans).
Measured on a 2-core CPU, per-sample forward+backward time against the chunk: a small
HF ConvNeXt at 224² is fastest at 8 (1.3× faster than 32), an smp U-Net (resnet18) at
192² at 8 (1.6× faster than 64), an smp U-Net++ (efficientnet-b5) at 256² at 1-2. No
fixed byte budget fits all three, so on a CPU the chunk is *measured*:

- the first chunk for an input shape is one sample run under `SavedBytes`, which counts
  what autograd keeps for the backward pass: that bounds the chunk by free memory;
- then the chunk climbs over powers of two from 8, up while the time per sample drops
  by more than 5%, else down while it does not rise by more than 5% (a 5% step is
  noise), and the fastest size is kept for the rest of the
  run (`BatchPlanner`, per shape, so later images of the same size start there). Every
  8th chunk after that re-times a neighbouring size (half, double) and the choice
  follows the fastest minimum seen, so a measurement spoilt by another process is
  corrected. Exploring costs nothing extra: every chunk is real work.

On CUDA the chunk is as many samples as fit in a fraction of the free memory, going by
the allocator's peak during the measuring chunk (forward and backward of one sample). On any
device an out-of-memory error halves the chunk and retries the same samples
(`ChunkRunner`). `-b/--batch-size` fixes the chunk, for bit-identical reruns (batched
kernels round differently at different batch sizes). The CAM engine may reuse all of
this: nothing here knows about Integrated Gradients.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("xai")

CPU_MAX_ROWS = 64
CUDA_MAX_ROWS = 256
CUDA_FREE_FRACTION = 0.6       # of free memory, over the measured peak per sample
CPU_FREE_FRACTION = 0.5
BACKWARD_FACTOR = 2.0          # CPU: a backward pass needs roughly as much again as the saved tensors
# On CUDA the saved bytes × BACKWARD_FACTOR proved cautious: on an H200, efficientnet-b5 U-Net++
# at 640² saves 3.4 GiB per sample, which allowed 12 rows, yet Captum's single pass of 30 fit.
# The allocator's own peak over the measuring chunk (`PeakBytes`) replaces the guess there:
# 3.4 GiB per sample at 640², 24 rows (0.67 s; 12 rows took 0.70 s, one pass of 30 0.64 s).
# 60% stays: an OOM halves the chunk for the rest of the run, which costs more than it saves.
GAIN_TO_GROW = 0.95            # double the chunk while time per sample falls below 95% of the last
REFINE_EVERY = 8               # after settling, every 8th chunk re-times a neighbouring size
CPU_START_ROWS = 8             # first CPU chunk (measured best on the models above: 4-16)


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


class PeakBytes:
    """CUDA: the allocator's peak inside the block above what was allocated on entry, i.e. all
    that a forward and backward pass of the chunk needed at once (None on other devices)."""

    def __init__(self, device):
        self.device = device
        self.bytes: int | None = None

    def __enter__(self) -> "PeakBytes":
        if getattr(self.device, "type", None) == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None and getattr(self.device, "type", None) == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            self.bytes = max(0, int(torch.cuda.max_memory_allocated(self.device)) - self._base)


def choose_batch_size(device, per_sample_bytes: int, rows: int, requested: int | None = None,
                      peak_bytes: int | None = None) -> int:
    """The most rows per pass that memory allows (the user's `--batch-size` if given).

    CUDA: CUDA_FREE_FRACTION of the free memory over the measured peak per sample (or, where
    none was measured, the saved bytes × BACKWARD_FACTOR), capped at CUDA_MAX_ROWS. CPU: half
    the available RAM over the saved bytes × BACKWARD_FACTOR, capped at CPU_MAX_ROWS (the CPU
    chunk is then tuned below this bound by `BatchPlanner`).
    """
    from xaicli.models.device import free_memory_bytes

    rows = max(1, int(rows))
    if requested:
        return max(1, min(int(requested), rows))
    need = max(1, int(peak_bytes if peak_bytes else per_sample_bytes * BACKWARD_FACTOR))
    free = free_memory_bytes(device)
    if device.type == "cuda":
        bs = min(CUDA_MAX_ROWS, int((free or 0) * CUDA_FREE_FRACTION) // need)
    else:
        bs = CPU_MAX_ROWS if not free else min(CPU_MAX_ROWS, int(free * CPU_FREE_FRACTION) // need)
    return max(1, min(int(bs), rows))


def _clock():
    """Wall time; with one intra-op thread the process's CPU time, which other processes
    on a shared machine cannot inflate (with several threads it would count their spinning)."""
    import torch

    return time.process_time if torch.get_num_threads() == 1 else time.perf_counter


class ChunkPlan:
    """What one input shape has learnt: the memory bound, the time per sample of each size tried, the choice.

    Tuning is a hill climb over powers of two from `start`: up while the time per sample
    improves by more than 5%, else down while it does not get worse by more than 5%; then
    the fastest size is kept, and every
    REFINE_EVERY-th chunk re-times one of its neighbours. A size's first use only warms
    it up (kernels are set up per shape: the first call is 20-40% slower), so each size
    is timed from its second use on.
    """

    def __init__(self, tune: bool, start: int = 1):
        self.tune = tune
        self.start = max(1, start)
        self.cap: int | None = None        # rows memory allows; None until measured
        self.times: dict[int, float] = {}  # chunk size -> best seconds per sample seen (warm)
        self.warm: set[int] = set()
        self.trying = self.start
        self.direction = 1
        self.best: int | None = None       # settled size
        self.chunks = 0

    def next_size(self, rows: int | None = None) -> int:
        """The next chunk; `rows`: how many the caller's whole task has, where it knows (a climb does
        not go beyond them: a layer of 16 channels could never time a chunk of 32)."""
        if self.cap is None:
            return 1                       # the measuring chunk: one sample, whatever its size
        top = self.cap if rows is None else max(1, min(self.cap, rows))
        if self.best is None and not self.tune:
            self.best = self.cap
        if self.best is not None:
            self.chunks += 1
            if self.tune and self.chunks % REFINE_EVERY == 0:   # keep measuring the neighbours
                near = [k for k in (self.best * 2, self.best // 2) if 1 <= k <= self.cap]
                if near:
                    return near[(self.chunks // REFINE_EVERY) % len(near)]
            return min(self.best, self.cap)
        self.start = min(self.start, self.cap)
        cur = min(self.trying, top)
        if cur not in self.times:
            return cur
        other = cur // 2 if self.direction > 0 else cur * 2        # the neighbour we came from
        improving = other not in self.times or self.times[cur] < GAIN_TO_GROW * self.times[other]
        # going down, a size within 5% of the last is noise, not a floor: look one further (a U-Net++
        # at 256² measured 8: 0.37, 4: 0.38, 2: 0.28 s per sample for no-grad passes)
        level = self.direction < 0 and other in self.times and self.times[cur] < self.times[other] / GAIN_TO_GROW
        step = cur * 2 if self.direction > 0 else cur // 2
        if (improving or level) and 1 <= step <= top:
            self.trying = step
            return step
        start = min(self.start, top)          # a call of fewer rows than the start climbs from them
        if self.direction > 0 and start // 2 >= 1 and start // 2 not in self.times and \
                (cur == start or not improving and cur == start * 2):
            self.direction = -1                                     # going up did not help: try down
            self.trying = start // 2
            return self.trying
        self.best = min(self.times, key=self.times.get)
        log.debug("chunk settled at %d (per-sample seconds %s)", self.best,
                  {k: round(v, 4) for k, v in sorted(self.times.items())})
        return min(self.best, self.cap)

    def observe(self, size: int, seconds: float) -> None:
        if size not in self.warm:
            self.warm.add(size)
            return
        per = seconds / size
        self.times[size] = min(per, self.times.get(size, per))
        if self.best is not None and self.tune:
            self.best = min(self.times, key=self.times.get)

    def took(self, size: int, rows: int, seconds: float) -> None:
        """A chunk of `rows` done in `seconds`, asked for as `size`: a full one is timed, a short one
        (the end of the rows) only warms its size up."""
        if rows == size:
            self.observe(size, seconds)
        else:
            self.warm.add(rows)

    @property
    def chunk(self) -> int | None:
        """The settled size, else the largest timed so far (None before any), for a record's figures."""
        return self.best or max(self.times, default=None)

    def shrink(self, size: int) -> None:
        """An OOM at `size`: never try that many again."""
        self.cap = max(1, min(self.cap or size, size // 2))
        self.trying = min(self.trying, self.cap)
        self.start = min(self.start, self.cap)
        if self.best is not None:
            self.best = min(self.best, self.cap)
        self.times = {k: v for k, v in self.times.items() if k <= self.cap}


class ChunkRunner:
    """Calls `work(start, stop)` over [0, n) in chunks; halves the chunk on OOM and retries.

    `work` must be all-or-nothing for its rows (accumulate into the caller's totals only
    after it succeeded), since a retried chunk runs again from the start. With a `plan`,
    the chunk sizes come from it (measured, tuned) and every full chunk is timed into it.
    """

    def __init__(self, batch_size: int, device=None, plan: ChunkPlan | None = None,
                 on_measure: Callable[[int, int | None], int] | None = None):
        self.batch_size = max(1, int(batch_size))
        self.device = device
        self.halvings = 0
        self.plan = plan
        self.on_measure = on_measure       # (saved, peak) bytes per sample -> memory bound (rows)
        self.sizes: list[int] = []         # chunk sizes used, in order

    def run(self, n: int, work: Callable[[int, int], None]) -> None:
        start = 0
        while start < n:
            size = self.plan.next_size() if self.plan is not None else self.batch_size
            measuring = self.plan is not None and self.plan.cap is None
            stop = min(n, start + size)
            oom = False
            clock = _clock()
            t0 = clock()
            try:
                if measuring:
                    with SavedBytes() as saved, PeakBytes(self.device) as peak:
                        work(start, stop)
                    n_rows = stop - start
                    per_peak = peak.bytes // n_rows if peak.bytes else None
                    self.plan.cap = max(1, self.on_measure(saved.bytes // n_rows, per_peak)) \
                        if self.on_measure else CPU_MAX_ROWS
                else:
                    work(start, stop)
            except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_out_of_memory(exc):
                    raise
                oom = True
            if not oom:
                if self.plan is not None:
                    sync(self.device)
                    self.plan.took(size, stop - start, clock() - t0)
                self.sizes.append(stop - start)
                start = stop
                continue
            # Outside the except block: the traceback (and the chunk's tensors) are gone now.
            self._release()
            if stop - start == 1:
                from xaicli.errors import XaiError

                raise XaiError("out of memory even with one sample per pass; use a smaller --size, "
                               "a smaller image, or --device cpu")
            self.halvings += 1
            if self.plan is not None:
                if self.plan.cap is None:
                    self.plan.cap = stop - start
                self.plan.shrink(stop - start)
            self.batch_size = max(1, (stop - start) // 2)
            log.warning("out of memory with %d samples per pass; retrying with %d", stop - start, self.batch_size)

    @property
    def chosen(self) -> int:
        """The chunk this run settled on (or the largest it used), for the record."""
        if self.plan is not None:
            return self.plan.best or max(self.sizes, default=1)
        return self.batch_size

    def _release(self) -> None:
        import gc

        gc.collect()
        if self.device is not None and getattr(self.device, "type", None) == "cuda":
            import torch

            torch.cuda.empty_cache()


def sync(device) -> None:
    """Wait for a CUDA device's queued kernels, so that a chunk's time is its own."""
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def planned_chunks(n: int, plan: ChunkPlan | None, fixed: int, device):
    """(start, stop) chunks over [0, n) for no-grad passes (the per-channel CAMs): sizes from `plan`,
    else `fixed`. The caller's work between two yields is timed into the plan, which so learns the
    fastest size per sample (no out-of-memory retry: the plan's cap comes from free memory)."""
    start = 0
    while start < n:
        size = plan.next_size(n) if plan is not None else max(1, int(fixed))
        stop = min(n, start + size)
        clock = _clock()
        t0 = clock()
        yield start, stop
        if plan is not None:
            sync(device)
            plan.took(size, stop - start, clock() - t0)
        start = stop


class BatchPlanner:
    """Chunk sizes per input shape for a whole run: measured once, tuned on a CPU, kept after OOM.

    `runner(sample, rows)` for passes with a backward; `runner(sample, rows, grad=False)`
    for forward-only passes, which reuse the settled size (or a conservative one).
    With `requested` (the user's -b) every pass uses exactly that.
    """

    def __init__(self, device, requested: int | None = None, tune: bool | None = None):
        self.device = device
        self.requested = requested
        self.tune = (getattr(device, "type", "cpu") == "cpu") if tune is None else tune
        self._plans: dict[tuple, ChunkPlan] = {}

    def plan_for(self, sample) -> ChunkPlan:
        key = tuple(sample.shape[1:])
        if key not in self._plans:
            # measure on one sample (safe whatever its size); CPU: the climb starts at CPU_START_ROWS
            # (within memory); CUDA: as many as fit.
            self._plans[key] = ChunkPlan(self.tune, CPU_START_ROWS if self.tune else 1)
        return self._plans[key]

    def runner(self, sample, rows: int, grad: bool = True) -> ChunkRunner:
        rows = max(1, rows)
        if self.requested:
            return ChunkRunner(min(self.requested, rows), self.device)
        plan = self.plan_for(sample)
        if not grad:
            size = plan.best or (min(plan.cap, 16) if plan.cap else 16)
            return ChunkRunner(min(size, rows), self.device)

        def bound(per_sample: int, peak: int | None) -> int:
            cap = choose_batch_size(self.device, max(per_sample, 1), 1 << 30, peak_bytes=peak)
            log.debug("inputs %s: %.0f MiB saved per sample (peak %s MiB), at most %d per pass",
                      tuple(sample.shape[1:]), per_sample / 2**20, peak and round(peak / 2**20), cap)
            return cap

        return ChunkRunner(1, self.device, plan=plan, on_measure=bound)
