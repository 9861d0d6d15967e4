"""Every bad value is refused before any rank starts: one line, exit code 2, nothing written."""

import os
import subprocess

import pytest

from tests.launcher.launching import launch, with_cpu_defaults
from tests.launcher.refusals import refusals

BAD_YAML = "_target_: launch.recipe.models.mlp\nhidden: [1, 2\n"


@pytest.fixture(scope="module")
def search_path(tmp_path_factory):
    """A config folder with a malformed ``model/bad.yaml``, added with hydra.searchpath."""
    folder = tmp_path_factory.mktemp("conf")
    (folder / "model").mkdir()
    (folder / "model" / "bad.yaml").write_text(BAD_YAML)
    return folder


#: (overrides, message): each refused in this process by ``Launch(...).prepare()``, the checks
#: ``python -m launch`` runs before it writes anything or starts a rank (one line, nothing
#: written); :data:`END_TO_END` also through ``main()``, and one as ``python -m launch``.
CASES = [
    # dist: ranges, infinities, addresses, ranks
    (["dist.nproc_per_node=0"], "dist.nproc_per_node=0: expected a positive int or 'auto'"),
    (["dist.backend=mpi"], "dist.backend='mpi': expected one of auto, gloo, nccl"),
    (["dist.backend=glo"], "expected one of auto, gloo, nccl; did you mean dist.backend=gloo?"),
    (["dist.node_rank=3"], "dist.node_rank=3: expected 0 to 0"),
    (["dist.nnodes=2"], "dist.master_port is required"),
    (["dist.shutdown_grace_s=-1"], "dist.shutdown_grace_s=-1.0: expected seconds from 0 to "),
    (["dist.shutdown_grace_s=inf"], "dist.shutdown_grace_s=inf: expected seconds from 0 to "),
    (["dist.rdzv_timeout_s=inf"], "dist.rdzv_timeout_s=inf: expected seconds from 1 to "),
    (["dist.timeout_s=inf"], "dist.timeout_s=inf: expected seconds from 1 to 31536000 (a year)"),
    (["dist.timeout_s=nan"], "dist.timeout_s=nan: expected seconds from 1 to"),
    (["dist.timeout_s=1e-9"], "dist.timeout_s=1e-09: expected seconds from 1 to"),
    (["dist.nnodes=two"], "dist.nnodes='two': expected a positive int, or MIN:MAX"),
    (["dist.max_restarts=-1"], "dist.max_restarts=-1: expected 0 or more"),
    (["dist.master_port=70000"], "dist.master_port=70000: expected 1 to 65535"),
    (
        ["dist.master_addr=999.1.1.1"],
        "dist.master_addr='999.1.1.1' does not resolve (Name or service not known): give node "
        "0's host name or IP address (127.0.0.1 on a single node)",
    ),
    (
        ["dist.master_addr=999.1.1.1", "dist.master_port=29555"],
        "dist.master_addr='999.1.1.1' does not resolve",  # not "port 29555 is busy"
    ),
    (
        ["dist.master_addr=192.0.2.1"],  # TEST-NET-1: never this host's
        "dist.master_addr='192.0.2.1' is not an address of this host, and node 0 listens there",
    ),
    (["dist.nproc_per_node=100000"], "dist.nproc_per_node=100000: this node has "),
    (["dist.strategy=zero"], "dist.strategy='zero': expected one of ddp, fsdp"),
    (["dist.start_method=forked"], "did you mean dist.start_method=fork?"),
    # trainer, checkpoint
    (["trainer.validate_every=0"], "trainer.validate_every=0: expected a positive int (epochs)"),
    (["trainer.log_every=-5"], "trainer.log_every=-5: expected a positive int (iterations)"),
    (["trainer.seed=-1"], "trainer.seed=-1: expected an int from 0 to 4294967295"),
    (["trainer.precision=bf61"], "did you mean trainer.precision=bf16?"),
    (["checkpoint.every_iters=-1"], "checkpoint.every_iters=-1: expected 0 (only at epoch ends)"),
    (["checkpoint.n_saved=0"], "checkpoint.n_saved=0: expected a positive int"),
    (["checkpoint.resume=sometimes"], "checkpoint.resume='sometimes': expected one of auto, never"),
    (
        ["dist.strategy=fsdp", "trainer.precision=fp16"],
        "trainer.precision=fp16 with dist.strategy=fsdp",
    ),
    (["dist.strategy=fsdp", "trainer.compile=true"], "trainer.compile=true with dist.strategy"),
    # the optimizer, built once as the recipe builds it
    (["optim.lr=-1"], "optim.lr=-1: torch.optim.Adam refuses it (Invalid learning rate: -1)"),
    (["optim.lr=inf"], "optim.lr=inf: expected a finite number"),
    (["optim.lr=abc"], "optim.lr='abc': expected a number (torch.optim.Adam's lr: float | Tensor)"),
    (["+optim.weight_decay=-1"], "optim.weight_decay=-1: torch.optim.Adam refuses it (Invalid"),
    (["+optim.betas=[0.9]"], "optim.betas=[0.9]: torch.optim.Adam refuses it ("),
    (["+optim.betas=[0.9,2]"], "optim.betas=[0.9,2]: torch.optim.Adam refuses it (Invalid beta"),
    (["optim=sgd", "optim.momentum=-1"], "optim.momentum=-1: torch.optim.SGD refuses it (Invalid"),
    (
        ["optim=sgd", "optim.momentum=0", "+optim.nesterov=true"],
        "optim.nesterov=true: torch.optim.SGD refuses it (Nesterov momentum requires a momentum "
        "and zero dampening)",
    ),
    # the global batch and the ranks
    (
        ["data.batch_size=64", "dist.nproc_per_node=3"],
        "data.batch_size=64 (the global batch, dist.nproc_per_node=3) cannot be split evenly among "
        "3 ranks (21 each, 63 in all): use a multiple of 3 (63 or 66), or a number of ranks that "
        "divides 64 (1, 2, 4, 8, 16, 32, 64)",
    ),
    (
        ["data.batch_size=1", "dist.nproc_per_node=2"],
        "cannot be split evenly among 2 ranks (0 each",
    ),
    (["data.batch_size=0"], "data.batch_size=0: expected a positive int"),
    (["~data.batch_size"], "data.batch_size is missing: the default recipe reads the global batch"),
    # a misspelt or unknown key, in every group: the accepted keys and the nearest one
    (
        ["dist.nproc=2"],
        "dist.nproc=2: unknown key; dist accepts nproc_per_node, nnodes, node_rank, master_addr, "
        "master_port, backend, max_restarts, timeout_s, rdzv_timeout_s, shutdown_grace_s, "
        "start_method, strategy, console; did you mean dist.nproc_per_node=2?",
    ),
    (["task.scrip=x.py"], "task.scrip=x.py: unknown key; task accepts script, args, entrypoint; "),
    (["checkpoint.resum=never"], "checkpoint accepts resume, n_saved, every_iters; did you mean "),
    (
        ["trainer.max_epoch=3"],
        "trainer.max_epoch=3: unknown key; trainer accepts max_epochs, seed, amp, precision, "
        "compile, validate_every, log_every, progress_bar; did you mean trainer.max_epochs=3?",
    ),
    (["+trainer.foo=1"], "trainer.foo=1: unknown key; trainer accepts max_epochs,"),
    (["+dist.deep.key=1"], "dist.deep.key=1: unknown key; dist accepts"),
    (
        ["model.hiden=64"],
        "model.hiden=64: unknown key; launch.recipe.models.mlp accepts in_features, hidden, "
        "num_classes; did you mean model.hidden=64?",
    ),
    (["+model.hiden=64"], "model.hiden=64: unknown key; launch.recipe.models.mlp accepts in_f"),
    (
        ["+model.depth=3"],
        "model.depth=3: unknown key; launch.recipe.models.mlp accepts in_features",
    ),
    (["model=cnn", "model.num_clases=10"], "did you mean model.num_classes=10?"),
    (["data.batchsize=32"], "launch.recipe.data.digits accepts val_fraction, split_seed, image, "),
    (["optim.lrr=0.1"], "optim.lrr=0.1: unknown key; torch.optim.Adam accepts params, lr, betas,"),
    (["+optim.lrr=0.1"], "optim.lrr=0.1: unknown key; torch.optim.Adam accepts params, lr, betas,"),
    (["optim.wieght_decay=0.1"], "; did you mean +optim.weight_decay=0.1?"),
    (
        ["optim.weight_decay=0.1"],
        "optim.weight_decay=0.1: not in the optim config, though torch.optim.Adam takes it: add "
        "it with +optim.weight_decay=0.1",
    ),
    (["optim=sgd", "optim.momentun=0.5"], "did you mean optim.momentum=0.5?"),
    (
        ["traner.max_epochs=3"],
        "traner.max_epochs=3: unknown key; the config accepts dist, task, checkpoint, trainer, "
        "model, data, optim; did you mean trainer.max_epochs=3?",
    ),
    (["+traner.max_epochs=3"], "traner.max_epochs=3: unknown key; the config accepts dist, task,"),
    (["+anything=1"], "anything=1: unknown key; the config accepts dist, task, checkpoint,"),
    (["modle=mlp"], "modle=mlp: unknown key; the config accepts dist, task, checkpoint, trainer"),
    (["model=resnet"], "model=resnet: no such option; model accepts cnn, mlp, transformer"),
    (["model=mpl"], "model=mpl: no such option; model accepts cnn, mlp, transformer; did you "),
    (["data=digit"], "data=digit: no such option; data accepts digits; did you mean data=digits?"),
    # values a model or the data cannot use, refused by the target's own check_arguments
    (["model.hidden=1.5"], "model.hidden=1.5: expected an int (launch.recipe.models.mlp's hidden"),
    (["data.image=maybe"], "data.image='maybe': expected true or false"),
    (["model=transformer", "model.heads=3"], "model.heads=3: expected a divisor of model.width"),
    (["model=transformer", "model.depth=0"], "model.depth=0: expected a positive int"),
    (["model=transformer", "model.tokens=0"], "model.tokens=0: expected a divisor of 64"),
    (["model=transformer", "model.width=-8"], "model.width=-8: expected a positive int"),
    (["model.hidden=-3"], "model.hidden=-3: expected a positive int"),
    (["model=cnn", "model.num_classes=5"], "model.num_classes=5: expected 10 or more"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5: expected a number in (0, 1)"),
    # sizes the ranks would fail on after they start (an empty epoch, a shape mismatch)
    (
        ["data.batch_size=3000"],
        "data.batch_size=3000: more than the 1438 training samples (data.val_fraction=0.2 holds "
        "out 359 of the 1797 digits), so an epoch would have no batch: expected at most 1438",
    ),
    (["data.val_fraction=0.999"], "data.batch_size=64: more than the 2 training samples"),
    (
        ["data.val_fraction=0.0001"],
        "data.val_fraction=0.0001 holds out no sample of the 1797 digits (the validation would "
        "be empty): expected a fraction that holds out one or more (0.001 or more)",
    ),
    (["model.in_features=10"], "model.in_features=10: expected 64 (the digits have 64 features)"),
    (
        ["data.image=true"],
        "data.image=true: model=mlp (launch.recipe.models.mlp) reads the 64 features, not "
        "(1, 8, 8) images: use data.image=false, or model=cnn or model=transformer",
    ),
    # groups removed, Hydra's own errors kept in one line (with their hints)
    (["~trainer"], "~trainer: the trainer group cannot be removed (set its keys instead)"),
    (["~dist.nnodes"], "~dist.nnodes: keys of dist cannot be removed (each has a default)"),
    (["~model"], "~model: the model group cannot be removed (choose another: model=<option>)"),
    (
        ["optim.lr=0.1,0.01"],
        "Ambiguous value for argument 'optim.lr=0.1,0.01': 1. To use it as a list, use "
        "key=[value1,value2]; 2. To use it as string, quote the value: key='value1,value2'; 3. To "
        "sweep over it, add --multirun to your command line",
    ),
    (["dist.master_addr=${{oops}}"], "dist.master_addr: Interpolation key 'oops' not found"),
    (["-m", "optim=sgd,nope"], "optim=nope: no such option; optim accepts adam, sgd"),
    (["-m", "trainer.seed=1,-2"], "trainer.seed=-2: expected an int from 0 to 4294967295"),
    (["x=["], "cannot parse the override 'x=['"),
    (
        ["task.script=README.md", "task.args=[run,--backend=gloo]"],
        "cannot parse the override 'task.args=[run,--backend=gloo]': no viable alternative at "
        "input '[run,--backend='; a script's arguments can also follow --, as typed: python -m "
        "launch task.script=main.py -- run --backend=gloo",
    ),
    (["model=bad", "hydra.searchpath=[file://{conf}]"], "malformed YAML in {conf}/model/bad.yaml"),
    # paths, files, the script and its arguments
    (["hydra.run.dir="], "hydra.run.dir='': expected a folder for the run"),
    (["-m", "hydra.sweep.dir="], "hydra.sweep.dir='': expected a folder for the run"),
    (["task.script=missing.py"], "task.script='missing.py': no such file"),
    (["task.entrypoint=tests.launcher.entry_points:nope"], "has no function 'nope'"),
    (["task.entrypoint=notamodule"], "expected 'package.module:function'"),
    (["--", "run"], "task.args (the arguments after --) are passed to task.script; give task"),
    (
        ["task.script=README.md", "task.args=[a]", "--", "b"],
        "the script's arguments are given twice: after -- and in task.args; give them once",
    ),
    # a whole group or a list key given a value of the wrong kind (not OmegaConf's words)
    (
        ["checkpoint=5"],
        "checkpoint=5: expected keys of the checkpoint group (checkpoint.resume=... or "
        "checkpoint={{resume:...}}); checkpoint accepts resume, n_saved, every_iters",
    ),
    (["task=[1]"], "task=[1]: expected keys of the task group (task.script=... or task={{"),
    (["trainer=5"], "trainer=5: no such option; trainer accepts default"),
    (["model=null"], "model=null: no such option; model accepts cnn, mlp, transformer"),
    (["data=[1]"], "data=[1]: no such option; data accepts digits"),
    (
        ["task.args=5"],
        "task.args=5: expected a list, such as task.args=[a,b]; or give the script's arguments "
        "after --",
    ),
    (["--config-dir", "{conf}/nope"], "--config-dir {conf}/nope: no such folder"),
    (["--config-dir="], "--config-dir='': expected a folder of configs"),
    (["--config-name", "myexp"], "--config-name myexp: no config named 'myexp' in "),
    (["--config-name={conf}/none.yaml"], "--config-name {conf}/none.yaml: no such config file"),
    (
        ["dist.nnodes=2", "dist.master_port=29999", "hydra.run.dir=null"],
        "with dist.nnodes > 1, give every node the same hydra.run.dir",
    ),
    (
        ["dist.nnodes=1:3", "dist.master_port=29999", "dist.nproc_per_node=2", "dist.backend=gloo"],
        "data.batch_size=64 (the global batch) does not divide among every world size "
        "dist.nnodes=1:3 allows with 2 rank(s) per node (2, 4, 6 ranks): use a multiple of 12 "
        "(e.g. 60 or 72)",
    ),
]
#: One of each kind, through ``main()`` as ``python -m launch`` runs it: exit 2, one line.
END_TO_END = [
    "dist.rdzv_timeout_s=inf",
    "dist.master_addr=999.1.1.1",
    "dist.nproc_per_node=100000",
    "+optim.betas=[0.9]",
    "data.batch_size=1 dist.nproc_per_node=2",
    "data.batch_size=3000",
    "traner.max_epochs=3",
    "model.hiden=64",
    "~trainer",
    "optim.lr=0.1,0.01",
    "model=bad hydra.searchpath=[file://{conf}]",
    "hydra.run.dir=",
    "--config-name myexp",
]


def _overrides(overrides, run_dir, conf):
    overrides = [o.format(conf=conf) for o in overrides]
    if "hydra.run.dir=null" in overrides:
        return [o for o in overrides if o != "hydra.run.dir=null"]
    if any(o.startswith("hydra.run.dir=") for o in overrides):
        return overrides
    script_args = overrides.index("--") if "--" in overrides else len(overrides)
    return [*overrides[:script_args], f"hydra.run.dir={run_dir}", *overrides[script_args:]]


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


def test_bad_input_ends_with_exit_2_one_line_and_nothing_written(tmp_path, search_path):
    """Many command lines through the launcher's ``main()``, in one process, and one as
    ``python -m launch``: exit 2, one ``error:`` line, no run folder, no rank output."""
    chosen = [(i, case) for i, case in enumerate(CASES) if " ".join(case[0]) in END_TO_END]
    assert len(chosen) == len(END_TO_END)
    cases = [(_overrides(o, tmp_path / f"run{i}", search_path), m) for i, (o, m) in chosen]
    found = refusals([with_cpu_defaults(argv) for argv, _ in cases])
    for (argv, message), (code, out, err) in zip(cases, found):
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and message.format(conf=search_path) in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and not out, (argv, out, err)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith("run")]
    run = launch("optim.lr=-1", f"hydra.run.dir={tmp_path / 'real'}", timeout=60)
    assert run.returncode == 2 and not run.stdout, run.stderr
    assert (
        run.stderr
        == "error: optim.lr=-1: torch.optim.Adam refuses it (Invalid learning rate: -1)\n"
    )
    assert not (tmp_path / "real").exists()


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
