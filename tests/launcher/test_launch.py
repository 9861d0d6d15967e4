"""``python -m launch`` end to end, in subprocesses, on 2 gloo ranks."""

import json
import os
import re
import socket
import subprocess
import sys
import time

from tests.launcher.launching import (
    ROOT,
    clean_env,
    launch,
)


def test_default_job_trains_to_95_percent_and_writes_from_rank_0_only(default_job):
    tmp_path, run = default_job
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["epoch"] == 8
    assert summary["validation"]["accuracy"] >= 0.95
    assert "validation  accuracy=" in run.stdout
    assert re.search(rf"TensorBoard: \S*tensorboard\S* --logdir {tmp_path / 'tb'}\n", run.stdout)
    kept = sorted(n for n in os.listdir(tmp_path / "checkpoints") if not n.startswith("."))
    assert kept == [
        "checkpoint_154.pt",
        "checkpoint_176.pt",
    ]
    event_files = [f for _, _, files in os.walk(tmp_path / "tb") for f in files]
    assert len([f for f in event_files if "tfevents" in f]) == 1  # rank 0 only, hparams inside
    assert (tmp_path / "config.yaml").exists()
    logs = list((tmp_path / "logs").glob("*/attempt_0/*/stdout.log"))
    assert len(logs) == 2  # torch's per-rank, per-attempt logs
    assert sorted(p.name for p in (tmp_path / "logs").glob("rank*.log")) == [
        "rank0.log",
        "rank1.log",
    ]


def test_entrypoint_runs_on_every_rank_with_the_composed_config(tmp_path):
    launch(
        f"hydra.run.dir={tmp_path}",
        "task.entrypoint=tests.launcher.entry_points:report",
        "optim.lr=0.5",
        "trainer.seed=7",
        check=True,
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, seen in enumerate(ranks):
        assert seen == {
            "rank": r,
            "world": 2,
            "sum": 3.0,
            "backend": "gloo",
            "node_rank": 0,
            "seed": 7,
            "lr": 0.5,
            "threads": 1,
        }


def test_script_runs_as_under_torchrun_and_under_plain_torchrun(tmp_path):
    script = ROOT / "tests/launcher/script.py"
    launch(
        f"hydra.run.dir={tmp_path}",
        f"task.script={script}",
        f"task.args=[{tmp_path},--flag,3]",
        check=True,
    )
    for r in range(2):
        assert json.loads((tmp_path / f"script{r}.json").read_text()) == {
            "rank": r,
            "world": 2,
            "sum": 3.0,
            "args": ["--flag", "3"],
        }
    plain = tmp_path / "torchrun"
    plain.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            str(script),
            str(plain),
        ],
        cwd=ROOT,
        env=clean_env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert json.loads((plain / "script1.json").read_text())["sum"] == 3.0


def test_multirun_runs_one_job_per_point_in_its_own_folder(tmp_path):
    launch(
        "-m",
        f"hydra.sweep.dir={tmp_path}",
        "optim.lr=0.1,0.01",
        "task.entrypoint=tests.launcher.entry_points:report",
        check=True,
    )
    lrs = sorted(json.loads((tmp_path / str(i) / "rank1.json").read_text())["lr"] for i in range(2))
    assert lrs == [0.01, 0.1]


def test_a_failing_rank_stops_the_job_with_a_short_summary(tmp_path):
    start = time.monotonic()
    run = launch(
        f"hydra.run.dir={tmp_path}", "task.entrypoint=tests.launcher.entry_points:fail_on_rank_1"
    )
    assert run.returncode != 0
    assert time.monotonic() - start < 60
    assert "rank 1 (local rank 1) raised ValueError" in run.stderr
    assert "ValueError: rank 1 cannot go on: bad shard" in run.stderr
    assert "log: " in run.stderr and "attempt_0/1/" in run.stderr
    assert run.stderr.index("Job failed in") < run.stderr.index("rank 1 (local rank 1) raised")


def test_busy_master_port_is_reported(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        run = launch(f"hydra.run.dir={tmp_path}", f"dist.master_port={port}", timeout=60)
    assert run.returncode != 0 and f"dist.master_port={port} is busy" in run.stderr


def test_under_torchrun_each_rank_runs_the_task_in_place(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "launch",
            f"hydra.run.dir={tmp_path}",
            "task.entrypoint=tests.launcher.entry_points:report",
        ],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for r in range(2):
        seen = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert (seen["rank"], seen["world"], seen["sum"]) == (r, 2, 3.0)
    assert not (tmp_path / "logs").exists()  # no agent of ours was started
