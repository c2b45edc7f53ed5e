"""Record ids: safe file names, stable for a given path, unique within one run."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_LEN = 80


def safe_id(text: str) -> str:
    """A file-name-safe id: no separators, no leading dots (so never `..`), no leading
    dash (which `tar`, `rm` or a shell loop over `*.npz` would take for an option)."""
    s = _UNSAFE.sub("_", text).lstrip("._-").rstrip("._") or "record"
    return s[:MAX_LEN]


def ids_for_paths(paths: list[Path]) -> list[str]:
    """Ids from file stems; paths whose stems collide get a short hash of their absolute path.

    The hash depends only on the path, so a file keeps its id when other files arrive,
    which `--skip-existing` in a cron job over a growing folder relies on.
    """
    stems = [safe_id(p.stem) for p in paths]
    counts = Counter(stems)
    out = []
    for stem, p in zip(stems, paths):
        if counts[stem] > 1:
            digest = hashlib.sha1(os.path.abspath(p).encode()).hexdigest()[:8]
            stem = f"{stem[:MAX_LEN - 9]}-{digest}"
        out.append(stem)
    return out


# -- shards: split the inputs of one run over N workers (SLURM array tasks) -----------------

def shard_of(record_id: str, count: int) -> int:
    """The shard (0 ≤ k < count) a record id belongs to: sha1 of the UTF-8 id, first 8 bytes
    as a big-endian integer, modulo `count`.

    It depends on the id alone, never on Python's per-process `hash()` salt, the host, the
    input order or the other inputs, so every task of an array job agrees on the split: the
    shards are disjoint and together hold every input.
    """
    digest = hashlib.sha1(record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


class Shard:
    """`--shard K/N`: keep the inputs whose id falls in shard K of N."""

    def __init__(self, index: int, count: int, origin: str = ""):
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard {index}/{count}: need 0 <= K < N")
        self.index, self.count, self.origin = index, count, origin

    def __contains__(self, record_id: str) -> bool:
        return self.count == 1 or shard_of(record_id, self.count) == self.index

    def __repr__(self) -> str:
        return f"Shard({self.index}/{self.count})"

    def to_meta(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(spec: str | None, environ: dict[str, str] | None = None) -> Shard | None:
    """`K/N` (0-based K), or `slurm`: K = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) /
    SLURM_ARRAY_TASK_STEP, N = SLURM_ARRAY_TASK_COUNT, so `--array=0-3`, `--array=1-4`
    and `--array=0-6:2` all give shards 0..3 of 4; or `slurm/N`: K = SLURM_ARRAY_TASK_ID.
    A one-task array with a nonzero id (a task resubmitted alone) is refused under `slurm`:
    it would take every input. Raises ValueError with a message that names the fix."""
    if spec is None or spec == "":
        return None
    spec = spec.strip()
    env = os.environ if environ is None else environ
    if spec.lower().startswith("slurm/"):
        return _slurm_of(spec, env)
    if spec.lower() == "slurm":
        if "SLURM_ARRAY_TASK_ID" not in env:
            raise ValueError("--shard slurm: SLURM_ARRAY_TASK_ID is not set; run it inside an array job "
                             "(sbatch --array=0-N), or pass --shard K/N")
        try:
            task = int(env["SLURM_ARRAY_TASK_ID"])
            count = int(env.get("SLURM_ARRAY_TASK_COUNT", ""))
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            step = int(env.get("SLURM_ARRAY_TASK_STEP", "1") or 1)
        except ValueError:
            raise ValueError("--shard slurm: SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT are not integers; "
                             "pass --shard K/N") from None
        offset = task - first
        if count == 1 and task != 0:
            raise ValueError(f"--shard slurm: this array has one task (id {task}), as a task resubmitted alone "
                             "has, and would take every input; pass --shard slurm/N with N the first array's "
                             f"task count (or --shard {task}/N)")
        if step < 1 or offset % step or not 0 <= offset // step < count:
            raise ValueError(f"--shard slurm: task {task} is not one of {count} evenly spaced tasks "
                             f"starting at {first}; submit a range such as --array=0-{count - 1}, "
                             "or pass --shard K/N")
        return Shard(offset // step, count, "slurm")
    k, sep, n = spec.partition("/")
    try:
        index, count = int(k), int(n)
    except ValueError:
        raise ValueError(f"--shard {spec!r}: use K/N (e.g. 0/4 for the first of four shards) or 'slurm'") from None
    if not sep or count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {spec!r}: need 0 <= K < N, e.g. 0/4 ... 3/4")
    return Shard(index, count, spec)


def _slurm_of(spec: str, env) -> Shard:
    """`slurm/N`: K = SLURM_ARRAY_TASK_ID itself, for arrays 0..N-1 whose tasks may be
    resubmitted alone (`sbatch --array=5`), which then see a one-task array."""
    try:
        count = int(spec.split("/", 1)[1])
        task = int(env["SLURM_ARRAY_TASK_ID"])
    except KeyError:
        raise ValueError(f"--shard {spec}: SLURM_ARRAY_TASK_ID is not set; run it inside an array job "
                         "(sbatch --array=0-N), or pass --shard K/N") from None
    except ValueError:
        raise ValueError(f"--shard {spec!r}: use slurm/N with N the number of tasks, e.g. slurm/16") from None
    if count < 1 or not 0 <= task < count:
        raise ValueError(f"--shard {spec}: task id {task} is not in 0..{count - 1}; submit --array=0-{count - 1} "
                         "(ids are the shard numbers)")
    return Shard(task, count, spec)
