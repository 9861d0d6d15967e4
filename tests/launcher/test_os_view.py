"""The operating system's view of a job: what it listens on, and what it leaves behind."""

import ipaddress
import os
import re
import signal
import socket
import time
from pathlib import Path

from tests.launcher.launching import ROOT, alive, children, kill_group, launch, start_launch

HELPERS = ROOT / "tests/launcher/helpers.py"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (ranks, the forkserver, what ranks started)."""
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def _address(hex_address: str) -> str:
    """``/proc/net/tcp{,6}``'s hex address (little-endian 32-bit words) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening(pids: list[int]) -> list[tuple[str, int]]:
    """The (address, port) each of ``pids`` listens on (TCP, IPv4 and IPv6), as ``ss -lt``."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                match = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
                if match:
                    inodes.add(match.group(1))
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                found.append((_address(address), int(port, 16)))
    return sorted(set(found))


def wait_for(paths: list[Path], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not all(p.exists() for p in paths) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(p.exists() for p in paths), f"never written: {paths}"


def helper_pids(run_dir: Path, attempt: int) -> list[int]:
    return [
        int(pid) for r in (0, 1) for pid in (run_dir / f"helpers{r}-{attempt}").read_text().split()
    ]


def test_a_job_listens_on_loopback_only_and_its_ranks_helpers_end_with_them(tmp_path):
    """Rank 1 fails once (restart), then the job waits for Ctrl-C: the stores listen on
    127.0.0.1 only, each attempt's helper processes are gone when it ends."""
    proc = start_launch(
        f"hydra.run.dir={tmp_path}",
        f"task.script={HELPERS}",
        f"task.args=[{tmp_path},fail-once]",
        "dist.max_restarts=1",
    )
    try:
        wait_for([tmp_path / "waiting0", tmp_path / "waiting1"])
        job = [proc.pid, *descendants(proc.pid)]
        sockets = listening(job)
        print(f"\nthe job listens on {sockets}")
        assert len(sockets) >= 2, sockets  # the rendezvous store and rank 0's store (and gloo)
        assert all(ipaddress.ip_address(address).is_loopback for address, _ in sockets), sockets
        assert not any(alive(pid) for pid in helper_pids(tmp_path, 0))  # ended by the restart
        second = helper_pids(tmp_path, 1)
        assert all(alive(pid) for pid in second)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, err
    assert "restart 1 of 1: rank 1 (local rank 1) raised ValueError" in err
    assert not [pid for pid in [*job, *second] if alive(pid)]
    assert "joined a process group" not in err


def test_a_failed_job_leaves_none_of_its_ranks_helpers(tmp_path):
    run = launch(
        f"hydra.run.dir={tmp_path}", f"task.script={HELPERS}", f"task.args=[{tmp_path},fail]"
    )
    assert run.returncode == 1, run.stderr
    assert "rank 1 (local rank 1) raised ValueError" in run.stderr
    helpers = helper_pids(tmp_path, 0)
    assert len(helpers) == 4 and not any(alive(pid) for pid in helpers)


def test_the_readmes_example_on_two_ranks_is_warned_once_that_each_rank_trains_alone(tmp_path):
    readme = (ROOT / "README.md").read_text()
    example = readme.split("```python\n")[1].split("```")[0]
    assert "trainer.run(data, max_epochs=4)" in example and "initialize" not in example
    script = tmp_path / "train.py"
    script.write_text(example)
    run = launch(f"hydra.run.dir={tmp_path}", f"task.script={script}")
    assert run.returncode == 0, run.stderr
    warning = (
        f"warning: task.script={script} ran on 2 ranks and none of them joined a process "
        "group: each rank trained its own copy of the model on all the data"
    )
    assert run.stderr.count(warning) == 1, run.stderr


def _entrypoint_warning(communicates: bool):
    import torch
    from omegaconf import OmegaConf

    import distengine.distributed as idist
    from launch.rank.alone import collectives, message

    cfg = OmegaConf.create({"task": {"script": None, "entrypoint": "mypkg.train:main"}})
    before = collectives()
    if communicates:
        idist.all_reduce(torch.ones(1))
    return message(cfg, before)


def test_an_entrypoint_that_never_communicates_is_warned_on_rank_0_only(ranks2):
    alone = ranks2.run(_entrypoint_warning, False)
    assert alone[1] is None
    assert alone[0].startswith(
        "warning: task.entrypoint=mypkg.train:main ran on 2 ranks and never communicated"
    )
    assert ranks2.run(_entrypoint_warning, True) == [None, None]


def test_store_addresses_refuse_a_name_that_resolves_to_loopback_on_several_nodes():
    import pytest

    from launch.config.errors import ConfigError
    from launch.job.stores import node_address, store_address

    assert store_address("10.1.2.3", 29500, nnodes=1) == "127.0.0.1"
    assert store_address("127.0.0.1", 29500, nnodes=2) == "127.0.0.1"  # nodes on this machine
    assert node_address("127.0.0.1", 29500, nnodes=2) == "127.0.0.1"
    name = socket.gethostname()
    resolved = socket.getaddrinfo(name, 29500, type=socket.SOCK_STREAM)[0][4][0]
    if ipaddress.ip_address(resolved).is_loopback:
        with pytest.raises(ConfigError, match=f"dist.master_addr='{name}' resolves to"):
            store_address(name, 29500, nnodes=2)
