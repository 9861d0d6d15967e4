"""Every bad value is refused before any rank starts: one line, exit code 2, nothing written."""

import os
import subprocess

import pytest

from tests.launcher.launching import launch

BAD_YAML = "_target_: launch.recipe.models.mlp\nhidden: [1, 2\n"


@pytest.fixture(scope="module")
def search_path(tmp_path_factory):
    """A config folder with a malformed ``model/bad.yaml``, added with hydra.searchpath."""
    folder = tmp_path_factory.mktemp("conf")
    (folder / "model").mkdir()
    (folder / "model" / "bad.yaml").write_text(BAD_YAML)
    return folder


#: (overrides, message): checked in-process, every one; the first of each kind also end to end.
CASES = [
    (["dist.nproc_per_node=0"], "dist.nproc_per_node=0: expected a positive int or 'auto'"),
    (["dist.backend=mpi"], "dist.backend='mpi': expected one of auto, gloo, nccl"),
    (["dist.node_rank=3"], "dist.node_rank=3: expected 0 to 0"),
    (["dist.nnodes=2"], "dist.master_port is required"),
    (["dist.shutdown_grace_s=-1"], "dist.shutdown_grace_s=-1.0: expected 0 or more seconds"),
    (["dist.nnodes=two"], "dist.nnodes='two': expected a positive int, or MIN:MAX"),
    (["dist.nproc=2"], "unknown key 'dist.nproc': dist accepts nproc_per_node, nnodes,"),
    (["trainer.epochs=2"], "unknown key 'trainer.epochs': trainer accepts max_epochs,"),
    (["+trainer.foo=1"], "unknown key 'trainer.foo': trainer accepts max_epochs,"),
    (["+anything=1"], "unknown key 'anything': the config has dist, task, checkpoint,"),
    (["+dist.deep.key=1"], "unknown key 'dist.deep': dist accepts"),
    (["trainer.validate_every=0"], "trainer.validate_every=0: expected a positive int (epochs)"),
    (["trainer.log_every=-5"], "trainer.log_every=-5: expected a positive int (iterations)"),
    (["trainer.seed=-1"], "trainer.seed=-1: expected an int from 0 to 4294967295"),
    (["checkpoint.every_iters=-1"], "checkpoint.every_iters=-1: expected 0 (only at epoch ends)"),
    (["checkpoint.n_saved=0"], "checkpoint.n_saved=0: expected a positive int"),
    (["checkpoint.resume=sometimes"], "checkpoint.resume='sometimes': expected one of auto, never"),
    (["model=resnet"], "model=resnet: no such option; model accepts cnn, mlp"),
    (["optim.lr=abc"], "optim.lr='abc': expected a number (torch.optim.Adam's lr: float | Tensor)"),
    (["+optim.lrr=0.1"], "unknown key 'optim.lrr': torch.optim.Adam accepts params, lr, betas,"),
    (["model.hidden=1.5"], "model.hidden=1.5: expected an int (launch.recipe.models.mlp's hidden"),
    (["+model.depth=3"], "unknown key 'model.depth': launch.recipe.models.mlp accepts in_features"),
    (["data.image=maybe"], "data.image='maybe': expected true or false"),
    (["dist.master_addr=${{oops}}"], "dist.master_addr: Interpolation key 'oops' not found"),
    (["-m", "optim=sgd,nope"], "optim=nope: no such option; optim accepts adam, sgd"),
    (["-m", "trainer.seed=1,-2"], "trainer.seed=-2: expected an int from 0 to 4294967295"),
    (["x=["], "cannot parse the override 'x=['"),
    (["task.script=missing.py"], "task.script='missing.py': no such file"),
    (["task.entrypoint=tests.launcher.entry_points:nope"], "has no function 'nope'"),
    (["task.entrypoint=notamodule"], "expected 'package.module:function'"),
    (["model=bad", "hydra.searchpath=[file://{conf}]"], "malformed YAML in {conf}/model/bad.yaml"),
    (
        ["dist.nnodes=2", "dist.master_port=29999", "hydra.run.dir=null"],
        "with dist.nnodes > 1, give every node the same hydra.run.dir",
    ),
    (["dist.strategy=zero"], "dist.strategy='zero': expected one of ddp, fsdp"),
    (
        ["dist.strategy=fsdp", "trainer.precision=fp16"],
        "trainer.precision=fp16 with dist.strategy=fsdp",
    ),
    (["dist.strategy=fsdp", "trainer.compile=true"], "trainer.compile=true with dist.strategy"),
    # values a model or the data cannot use, refused by the target's own check_arguments
    (["model=transformer", "model.heads=3"], "model.heads=3: expected a divisor of model.width"),
    (["model=transformer", "model.depth=0"], "model.depth=0: expected a positive int"),
    (["model=transformer", "model.tokens=0"], "model.tokens=0: expected a divisor of 64"),
    (["model=transformer", "model.width=-8"], "model.width=-8: expected a positive int"),
    (["model.hidden=-3"], "model.hidden=-3: expected a positive int"),
    (["model=cnn", "model.num_classes=5"], "model.num_classes=5: expected 10 or more"),
    (["data.batch_size=0"], "data.batch_size=0: expected a positive int"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5: expected a number in (0, 1)"),
    (
        ["dist.nnodes=1:3", "dist.master_port=29999", "dist.nproc_per_node=2", "dist.backend=gloo"],
        "data.batch_size=64 (the global batch) does not divide among every world size "
        "dist.nnodes=1:3 allows with 2 rank(s) per node (2, 4, 6 ranks): use a multiple of 12 "
        "(e.g. 60 or 72)",
    ),
]
#: One of each kind, end to end.
END_TO_END = [0, 9, 10, 14, 17, 18, 19, 24, 30, 31, 35]


def _overrides(overrides, run_dir, conf):
    overrides = [o.format(conf=conf) for o in overrides]
    if "hydra.run.dir=null" in overrides:
        return [o for o in overrides if o != "hydra.run.dir=null"]
    return [*overrides, f"hydra.run.dir={run_dir}"]


@pytest.mark.parametrize("overrides, message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_every_bad_value_is_refused_with_a_one_line_message(
    tmp_path, search_path, overrides, message
):
    from launch.cli import Launch
    from launch.config.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        Launch(_overrides(overrides, tmp_path / "run", search_path)).prepare()
    assert message.format(conf=search_path) in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "overrides, message", [CASES[i] for i in END_TO_END], ids=[str(i) for i in END_TO_END]
)
def test_bad_input_ends_with_exit_2_one_line_and_nothing_written(
    tmp_path, search_path, overrides, message
):
    run_dir = tmp_path / "run"
    run = launch(*_overrides(overrides, run_dir, search_path), timeout=60)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: ") and message.format(conf=search_path) in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not run_dir.exists() and not run.stdout


def test_a_read_only_run_folder_is_refused_in_one_line(tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the folder immutable instead
        if subprocess.run(["chattr", "+i", str(read_only)], capture_output=True).returncode:
            pytest.skip("running as root, and chattr +i is not available here")
    try:
        run = launch(f"hydra.run.dir={read_only / 'run'}", timeout=60)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(read_only)], capture_output=True)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() in (
        f"error: cannot write {read_only / 'run'}: [EACCES] Permission denied",
        f"error: cannot write {read_only / 'run'}: [EPERM] Operation not permitted",
    )


def test_a_full_disk_is_named_with_enospc_and_the_path(tmp_path):
    """At start (the launcher's own files) and in a rank (a checkpoint write)."""
    (tmp_path / "config.yaml").symlink_to("/dev/full")
    start = launch(f"hydra.run.dir={tmp_path}", timeout=60)
    assert start.returncode == 2
    assert start.stderr.strip() == (
        f"error: cannot write {tmp_path / 'config.yaml'}: [ENOSPC] No space left on device"
    )
    (tmp_path / "config.yaml").unlink()
    run = launch(
        f"hydra.run.dir={tmp_path}",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "task.entrypoint=tests.launcher.entry_points:train_with_a_full_disk",
    )
    assert run.returncode == 1
    assert "raised OSError: [Errno 28] [ENOSPC] No space left on device while writing the " in (
        run.stderr
    )
    assert f"checkpoint {tmp_path / 'checkpoints' / 'checkpoint_22.pt'}" in run.stderr


def test_more_ranks_than_cores_are_warned_about_at_once(tmp_path):
    run = launch(
        f"hydra.run.dir={tmp_path}",
        "dist.nproc_per_node=2",
        "task.entrypoint=tests.launcher.entry_points:report",
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
        check=True,
    )
    assert run.stderr.startswith("warning: 2 ranks on 1 CPU core (dist.nproc_per_node=2)")


def test_exit_codes_match_the_library():
    from distengine.handlers.preemption import EXIT_PREEMPTED
    from launch import exit_codes

    assert exit_codes.PREEMPTED == EXIT_PREEMPTED
    codes = [exit_codes.DONE, exit_codes.FAILED, exit_codes.BAD_INPUT, exit_codes.PREEMPTED]
    assert len({*codes, exit_codes.INTERRUPTED}) == 5


def test_type_errors_are_one_line_and_name_the_key():
    from launch.config.errors import ConfigError
    from launch.config.overrides import check_override_keys
    from launch.config.schema import GROUPS

    cases = {
        "trainer.amp=maybe": "trainer.amp='maybe': expected true or false",
        "dist.master_port=http": "dist.master_port='http': expected an int or null",
        "dist.timeout_s=soon": "dist.timeout_s='soon': expected a number",
        "trainer.seed=1,x": "trainer.seed='x': expected an int",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            check_override_keys([override], GROUPS)
    check_override_keys(["dist.master_port=null", "trainer.amp=True", "optim.lr=0.1"], GROUPS)
