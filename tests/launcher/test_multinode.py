"""Several nodes (on loopback) and SLURM's srun: one run folder, one checkpoint, one group."""

import json
import time

from tests.launcher.launching import kill_group, start_launch
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


def test_two_nodes_resume_from_one_run_folder(tmp_path):
    def nodes(*overrides):
        port = free_port()
        common = ["dist.nnodes=2", "dist.nproc_per_node=1", f"dist.master_port={port}"]
        return run_nodes(
            [
                ({}, [f"hydra.run.dir={tmp_path}", f"dist.node_rank={n}", *common, *overrides])
                for n in (0, 1)
            ]
        )

    quiet = "trainer.progress_bar=false"
    first = nodes("trainer.max_epochs=1", quiet)
    assert [code for code, _, _ in first] == [0, 0], first
    second = nodes("trainer.max_epochs=2", quiet)
    assert [code for code, _, _ in second] == [0, 0], second
    resumed = f"resumed from {tmp_path}/checkpoints/checkpoint_22.pt (iteration 22)"
    assert resumed in second[0][1]  # rank 0 chose it; every rank checked it loaded iteration 22
    assert json.loads((tmp_path / "metrics.json").read_text())["iteration"] == 44
    assert sorted((tmp_path / "logs").iterdir()) == [
        tmp_path / "logs" / "node0",
        tmp_path / "logs" / "node1",
    ]


def test_a_node_alone_gives_up_within_the_rendezvous_timeout_in_one_line(tmp_path):
    common = ["dist.nnodes=2", "dist.nproc_per_node=1", "dist.rdzv_timeout_s=5", REPORT]
    start = time.monotonic()
    results = run_nodes(
        [
            (
                {},
                [
                    f"hydra.run.dir={tmp_path / f'n{n}'}",
                    f"dist.node_rank={n}",
                    f"dist.master_port={free_port()}",
                    *common,
                ],
            )
            for n in (0, 1)
        ],
        timeout=60,
    )
    elapsed = time.monotonic() - start
    print(f"\nnodes alone gave up after {elapsed:.1f}s (dist.rdzv_timeout_s=5)")
    assert elapsed < 15
    for n, (code, _, err) in enumerate(results):
        assert code == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: node {n} waited 5 s"), err
        assert "Traceback" not in err and "socket" not in lines[0]


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
