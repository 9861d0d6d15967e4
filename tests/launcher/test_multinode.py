"""Several nodes (on loopback) and SLURM's srun: one run folder, one checkpoint, one group."""

import json
import os
import signal
import time

import pytest

from tests.launcher.launching import kill_group, start_launch
from tests.launcher.weights import SHORT, assert_bitwise_equal, final_weights
from tests.multirank import free_port

REPORT = "task.entrypoint=tests.launcher.entry_points:report"


def run_nodes(env_or_overrides: list[tuple[dict, list[str]]], timeout: float = 120) -> list:
    """Start one launcher per (env, overrides) at once; their (returncode, stdout, stderr)."""
    procs = [start_launch(*overrides, env=env) for env, overrides in env_or_overrides]
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            kill_group(p)
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


def srun_env(rank: int, port: int) -> dict[str, str]:
    """What srun gives task ``rank`` of a 2-task step on one node."""
    return {
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NODEID": "0",
        "SLURM_NNODES": "1",
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_ID": "0",
        "SLURM_JOB_NODELIST": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def test_a_simulated_two_task_srun_forms_one_group_and_all_reduces(tmp_path):
    port = free_port()
    results = run_nodes(
        [(srun_env(r, port), [f"hydra.run.dir={tmp_path}", REPORT]) for r in (0, 1)]
    )
    assert [code for code, _, _ in results] == [0, 0], results
    for r in range(2):
        seen = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert (seen["rank"], seen["world"], seen["sum"]) == (r, 2, 3.0)
    assert not (tmp_path / "logs").exists()  # no agent of ours: each task is one rank


def _newest_iteration(run_dir) -> int:
    names = (run_dir / "checkpoints").glob("checkpoint_*.pt")
    return max((int(p.stem.split("_")[1]) for p in names), default=0)


def _two_nodes(run_dir, *overrides, node_1_first=True) -> list:
    """Node 0's and node 1's launchers (node 1 started first: torch's rendezvous orders the
    nodes by (address, launcher pid), so on one machine it hosts global rank 0)."""
    common = [
        f"hydra.run.dir={run_dir}",
        "dist.nnodes=2",
        "dist.nproc_per_node=1",
        f"dist.master_port={free_port()}",
        *overrides,
    ]
    order = (1, 0) if node_1_first else (0, 1)
    threads = {"OMP_NUM_THREADS": "1"}  # as each of 2 ranks on this 2-core node has
    procs = {n: start_launch(*common, f"dist.node_rank={n}", env=threads) for n in order}
    return [procs[0], procs[1]]


def _finish(procs, timeout=240) -> list:
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            kill_group(p)
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


def test_rank_0_on_node_1_stops_and_resumes_as_node_0s_run(tmp_path, uninterrupted):
    """Global rank 0 on node 1: its checkpoints carry node 0's run id, a SIGTERM to both
    nodes saves one, and the resume continues it to the same weights as an uninterrupted run."""
    procs = _two_nodes(tmp_path, *SHORT)
    assert procs[1].pid < procs[0].pid  # what makes node 1 sort first here
    deadline = time.monotonic() + 180
    while _newest_iteration(tmp_path) < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    stopped = _finish(procs)
    assert [code for code, _, _ in stopped] == [75, 75], stopped
    node0, node1 = stopped[0][2], stopped[1][2]
    assert "node 0 joined: global rank 1 of 2 (rank 0 runs on node 1" in node0
    assert "node 1 joined: global rank 0 of 2 (rank 0 runs here)" in node1
    assert "node 0 (global rank 1) stopped" in node0 and "node 1 (global rank 0) stopped" in node1
    run_id = json.loads((tmp_path / "run.json").read_text())["run_id"]
    sidecars = list((tmp_path / "checkpoints").glob(".*.meta.json"))
    assert sidecars and {json.loads(p.read_text())["run_id"] for p in sidecars} == {run_id}
    resumed = _finish(_two_nodes(tmp_path, *SHORT))
    assert [code for code, _, _ in resumed] == [0, 0], resumed
    assert "resumed from" in resumed[1][1] and "starting at iteration 0" not in resumed[1][1]
    assert "node 0 (global rank 1) done" in resumed[0][2]
    assert not (tmp_path / "checkpoints" / "previous").exists()
    assert_bitwise_equal(final_weights(tmp_path), uninterrupted)
    assert json.loads((tmp_path / "metrics.json").read_text())["iteration"] == 88
    assert sorted((tmp_path / "logs").iterdir()) == [
        tmp_path / "logs" / "node0",
        tmp_path / "logs" / "node1",
    ]


@pytest.mark.parametrize("killed", [1, 0])
def test_a_node_whose_launcher_is_killed_is_named_as_vanished_by_the_other(tmp_path, killed):
    """Node 1 lost: node 0 names it. Node 0 lost (its store with it): node 1 says so."""
    entry = "task.entrypoint=tests.launcher.entry_points:all_reduce_forever"
    procs = _two_nodes(tmp_path, entry, node_1_first=False)
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"pid{r}").exists() for r in (0, 1)):
        assert time.monotonic() < deadline, "the ranks never started"
        time.sleep(0.1)
    os.killpg(procs[killed].pid, signal.SIGKILL)  # its launcher and group: its ranks die too
    survivor = 1 - killed
    code, _, err = _finish(procs, timeout=120)[survivor]
    assert code == 1, err
    assert f"node {survivor} (global rank {survivor}) failed" in err
    if killed == 0:  # noticed by the agent's store poll, or by the ranks first
        gone = "node 0 vanished: the job's store at 127.0.0.1:"
        assert err.count(gone) == 1 and "Traceback" not in err, err
        if "Job failed" not in err:
            return
    report = err[err.index("Job failed") :].splitlines()
    if killed == 1:
        assert report[1] == "node 1 (global rank 1) vanished: its launcher stopped answering"
    else:
        assert report[1].startswith("node 0 vanished: the job's store at 127.0.0.1:")
    assert report[2] == "then, on this node, because of it:", err


def test_a_node_alone_gives_up_within_the_rendezvous_timeout_in_one_line(tmp_path):
    """Node 0 and node 1 of 2, each alone; node 0 of an elastic 2:3 job, alone (MIN unmet)."""
    common = ["dist.nproc_per_node=1", "dist.rdzv_timeout_s=5", REPORT]
    alone = [(0, "2"), (1, "2"), (0, "2:3")]
    start = time.monotonic()
    results = run_nodes(
        [
            (
                {},
                [
                    f"hydra.run.dir={tmp_path / f'n{i}'}",
                    f"dist.node_rank={n}",
                    f"dist.nnodes={nnodes}",
                    f"dist.master_port={free_port()}",
                    *common,
                ],
            )
            for i, (n, nnodes) in enumerate(alone)
        ],
        timeout=60,
    )
    elapsed = time.monotonic() - start
    print(f"\nnodes alone gave up after {elapsed:.1f}s (dist.rdzv_timeout_s=5)")
    assert elapsed < 45  # not torch's two minutes of retries (a loaded machine starts slowly)
    for (n, _), (code, _, err) in zip(alone, results):
        assert code == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: node {n} waited 5 s"), err
        assert "Traceback" not in err and "socket" not in lines[0]
    assert "for at least 2 of the dist.nnodes=2:3 nodes to join" in results[2][2]


def _blind_rank_1(run_dir):
    """shared_config on two ranks whose rank 1 sees another folder at rank 0's path."""
    from omegaconf import OmegaConf

    import launch.rank.shared as shared
    from distengine.distributed import get_rank
    from launch.job.folder import RunFolder

    folder, sees = RunFolder(run_dir), shared._sees_job
    if get_rank() == 0:
        folder.acquire(command="test")
    else:
        shared._sees_job = lambda *args: False  # another filesystem at the same path
    try:
        shared.shared_config(OmegaConf.create({"run_dir": str(run_dir), "job_id": folder.job_id}))
    except RuntimeError as error:
        return str(error)
    finally:
        shared._sees_job = sees
        folder.release()
    return "no error"


def test_ranks_that_cannot_see_rank_0s_run_folder_stop_every_rank(ranks2, tmp_path):
    messages = ranks2.run(_blind_rank_1, tmp_path)
    assert messages[0] == messages[1]
    assert messages[0].startswith("rank 1 on ")
    assert f"cannot see the run folder {tmp_path} that rank 0 uses" in messages[0]


def _load_iteration(iterations):
    from distengine.distributed import get_rank
    from launch.recipe.resume import check_same_iteration

    try:
        check_same_iteration(iterations[get_rank()], "/runs/x/checkpoint_22.pt")
    except RuntimeError as error:
        return str(error)
    return "same"


def test_ranks_that_loaded_different_iterations_all_refuse_to_go_on(ranks2):
    assert ranks2.run(_load_iteration, [22, 22]) == ["same", "same"]
    refused = ranks2.run(_load_iteration, [22, 20])
    assert (
        refused
        == [
            "the ranks loaded different iterations from /runs/x/checkpoint_22.pt "
            "(rank 0: 22, rank 1: 20)"
        ]
        * 2
    )
