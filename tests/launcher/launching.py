"""Running ``python -m launch`` in a subprocess, with cleanup even when a test fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


#: What a launcher test means unless it says otherwise: 2 ranks on the CPU, whatever the
#: machine has (``auto`` would pick nccl and one rank per GPU where there are GPUs, or one
#: rank per core).
CPU_JOB = {"dist.backend": "gloo", "dist.nproc_per_node": "2"}


def with_cpu_defaults(overrides: tuple[str, ...] | list[str]) -> list[str]:
    """``overrides`` plus :data:`CPU_JOB`'s keys that they do not set (before a ``--``: what
    follows it is the script's)."""
    end = list(overrides).index("--") if "--" in overrides else len(overrides)
    ours, script = list(overrides[:end]), list(overrides[end:])
    given = {o.lstrip("+~").split("=", 1)[0] for o in ours}
    return [*ours, *(f"{k}={v}" for k, v in CPU_JOB.items() if k not in given), *script]


def start_launch(
    *overrides: str,
    pipe: bool = True,
    env: dict[str, str] | None = None,
    cuda: bool = False,
    **popen,
) -> subprocess.Popen:
    """Start ``python -m launch`` with Hydra overrides from the repo root, in its own session.

    Output is captured as text with ``pipe``, else discarded; ``env`` adds variables.
    Without ``cuda`` the job is a CPU job (:data:`CPU_JOB`, CUDA hidden from every process);
    with it, the overrides are passed as given and the GPUs are visible.
    Stop it with :func:`kill_group`.
    """
    out = subprocess.PIPE if pipe else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "launch", *(overrides if cuda else with_cpu_defaults(overrides))],
        cwd=ROOT,
        stdout=out,
        stderr=out,
        text=True,
        start_new_session=True,
        env={**clean_env(cuda), **(env or {})},
        **popen,
    )


def launch(
    *overrides: str,
    timeout: float = 120,
    check: bool = False,
    env: dict[str, str] | None = None,
    cuda: bool = False,
    **popen,
) -> subprocess.CompletedProcess:
    """Run ``python -m launch`` to the end; its whole process group is killed afterwards."""
    proc = start_launch(*overrides, env=env, cuda=cuda, **popen)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check and result.returncode != 0:
        raise AssertionError(f"launch failed ({result.returncode}):\n{out}\n{err}")
    return result


def clean_env(cuda: bool = False) -> dict[str, str]:
    """This environment without another launcher's variables; CUDA hidden unless ``cuda``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("TORCHELASTIC", "RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM", "MASTER_", "DISTENGINE")
        )
    }
    env["PYTHONUNBUFFERED"] = "1"
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (ranks lead groups of their own)."""
    ranks = children(proc.pid)
    for pid in [proc.pid, *ranks]:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait(timeout=30)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def start_sleeping_job(
    run_dir: Path,
    *overrides: str,
    entrypoint: str = "sleep_forever",
    ranks: int = 2,
    pipe: bool = False,
) -> tuple[subprocess.Popen, list[int]]:
    """Start a job whose ranks write their pids into ``run_dir`` and sleep; wait for them."""
    import time

    proc = start_launch(
        f"hydra.run.dir={run_dir}",
        f"task.entrypoint=tests.launcher.entry_points:{entrypoint}",
        *overrides,
        pipe=pipe,
    )
    deadline = time.monotonic() + 60
    while len(list(run_dir.glob("pid*"))) < ranks and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc, [int(p.read_text()) for p in run_dir.glob("pid*")]


def wait_gone(pids: list[int], seconds: float) -> float:
    """Seconds until none of ``pids`` is alive (or ``seconds`` if some still are)."""
    import time

    start = time.monotonic()
    while any(alive(pid) for pid in pids) and time.monotonic() - start < seconds:
        time.sleep(0.05)
    return time.monotonic() - start


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (forked ranks are the launcher's children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found
