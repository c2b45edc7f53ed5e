"""A real SLURM array job: a single-node cluster (slurmctld + slurmd, no munge, no cgroups)
started for this module in a temp folder, `sbatch --array=0-3 --wait
examples/slurm_array.sbatch`, i.e. `xai attribute --shard slurm -o DIR/` in each task.

Skipped, with the reason, only where SLURM is not installed or its daemons cannot start
(.ci/run installs the Debian packages: slurmctld slurmd slurm-client).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_models import write_png

ROOT = Path(__file__).resolve().parent.parent
DAEMONS = ("slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One node, one partition, state and logs in `root`; ports chosen free at start."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _which(self, name: str) -> str:
        return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin") or name

    def start(self, timeout: float = 30) -> None:
        r = self.root
        for d in ("state", "spool", "log", "run"):
            (r / d).mkdir(parents=True, exist_ok=True)
        probe = subprocess.run([self._which("slurmd"), "-C"], capture_output=True, text=True, timeout=30)
        node = next((ln for ln in probe.stdout.splitlines() if ln.startswith("NodeName=")), None)
        if node is None:
            raise RuntimeError(f"slurmd -C gave no node line: {probe.stderr.strip()[:200]}")
        node = re.sub(r"RealMemory=\d+", "RealMemory=500", node)
        name = re.search(r"NodeName=(\S+)", node).group(1)
        user = getpass.getuser()
        self.conf.write_text(f"""ClusterName=xaitest
SlurmctldHost={name}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MailProg=/bin/true
MinJobAge=4
ReturnToService=2
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes={name} Default=YES MaxTime=INFINITE State=UP
""")
        for daemon in ("slurmctld", "slurmd"):
            proc = subprocess.run([self._which(daemon), "-f", str(self.conf)], env=self.env, capture_output=True,
                                  text=True, timeout=30)
            if proc.returncode != 0:
                raise RuntimeError(f"{daemon} did not start: {(proc.stderr or self.log(daemon)).strip()[-300:]}")
        t0, state = time.time(), ""
        while time.time() - t0 < timeout:
            p = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, env=self.env,
                               timeout=30)
            state = p.stdout.strip() or p.stderr.strip()
            if state == "idle":
                return
            time.sleep(0.3)
        raise RuntimeError(f"node not idle after {timeout:.0f} s ({state}); slurmd log: {self.log('slurmd')[-300:]}")

    def log(self, daemon: str) -> str:
        try:
            return (self.root / "log" / f"{daemon}.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        subprocess.run(["scancel", f"--user={getpass.getuser()}"], env=self.env, capture_output=True, timeout=30)
        t0 = time.time()
        while time.time() - t0 < 10:
            q = subprocess.run(["squeue", "-h"], env=self.env, capture_output=True, text=True, timeout=30)
            if q.returncode != 0 or not q.stdout.strip():
                break
            time.sleep(0.2)
        pids = []
        for daemon in ("slurmd", "slurmctld"):
            try:
                pid = int((self.root / "run" / f"{daemon}.pid").read_text())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            except ProcessLookupError:
                pass
        t0 = time.time()
        while pids and time.time() - t0 < 10:
            pids = [p for p in pids if _running(p)]
            time.sleep(0.1)
        for p in pids:  # still there after 10 s
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has exited
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = [d for d in DAEMONS if not (shutil.which(d) or shutil.which(d, path="/usr/sbin:/sbin"))]
    if missing:
        pytest.skip(f"SLURM is not installed (no {', '.join(missing)}); "
                    "apt-get install slurmctld slurmd slurm-client (.ci/run does)")
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        c.stop()
        pytest.skip(f"a single-node SLURM cannot start here: {exc}")
    yield c
    c.stop()


def test_sbatch_array_shards_cover_every_input_exactly_once(cluster, tmp_path):
    from xaicli.io.ids import shard_of
    from xaicli.models.builtin.shapes import make_sample

    import warnings

    import torch
    from helpers_models import tiny_segmenter

    scans, out = tmp_path / "scans", tmp_path / "out"
    scans.mkdir()
    # A tiny TorchScript segmenter: each task then imports torch only (not smp), which keeps
    # four tasks on two cores at seconds, not a minute.
    model = tmp_path / "seg.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(tiny_segmenter(classes=1)), str(model))
    ids = [f"scan_{i:02d}" for i in range(10)]
    for i, rid in enumerate(ids):
        write_png(scans / f"{rid}.png", make_sample(i, "segmentation")[0][:64, :64])
    bindir = str(Path(sys.executable).parent)
    env = {**cluster.env, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(["sbatch", "--array=0-3", "--wait", "--output", str(tmp_path / "task-%a.log"),
                           str(ROOT / "examples" / "slurm_array.sbatch"), str(model), str(scans), str(out),
                           "--steps", "2", "--no-image"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    logs = {p.name: p.read_text(errors="replace") for p in tmp_path.glob("task-*.log")}
    assert proc.returncode == 0, (proc.stdout, proc.stderr, logs)
    assert sorted(logs) == [f"task-{k}.log" for k in range(4)]
    for k in range(4):  # each task knew its place in the array
        assert f"task {k} of 4" in logs[f"task-{k}.log"], logs
        assert "Traceback" not in logs[f"task-{k}.log"]
    # the union is the whole set, no record made twice
    entries = [json.loads(s) for s in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(e["id"] for e in entries) == ids
    assert sorted(p.stem for p in out.glob("*.npz")) == ids
    assert all(e["maps"] == ["attr/integrated_gradients/black"] and e["command"] == "attribute" for e in entries)
    from xaicli.io.record import Record

    for rid in ids:
        rec = Record.from_bytes((out / f"{rid}.npz").read_bytes(), rid)
        assert [h["command"] for h in rec.meta["history"]] == ["attribute"]
    # four non-empty shards of ten ids: every task had work, so the split really happened
    assert all(any(shard_of(rid, 4) == k for rid in ids) for k in range(4))
