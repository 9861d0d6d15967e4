"""Device rules before any rank starts, and ranks forked from a forkserver.

The rules are checked in-process against a CUDA view the test chooses (no
GPU needed); the forkserver runs end to end on the CPU. Tests marked ``gpu``
run the default job and the refusals on this machine's real GPUs.
"""

import json

import pytest
import torch

from launch.config.checks import Devices, check_config, check_devices
from launch.config.compose import compose, job_config
from launch.config.errors import ConfigError
from tests.launcher.launching import launch
from tests.launcher.weights import SHORT

H100 = Devices(gpus=1, bf16=True, triton=True)
TWO_V100 = Devices(gpus=2, bf16=False, triton=True)
CPU = Devices()


def job(*overrides):
    return job_config(compose(list(overrides)))


#: (overrides, devices, the refusal's words)
REFUSED = [
    (["dist.nproc_per_node=2"], H100, "dist.nproc_per_node=2 with dist.backend=auto, which is"),
    (["dist.nproc_per_node=2", "dist.backend=nccl"], H100, "nccl needs a GPU per rank and this"),
    (["dist.nproc_per_node=3"], TWO_V100, "this node shows 2: use dist.nproc_per_node=2 (or auto)"),
    (["dist.backend=nccl"], CPU, "dist.backend=nccl needs CUDA GPUs and this node shows none"),
    (["dist.start_method=fork"], H100, "dist.start_method=fork: this node shows 1 CUDA GPU, and"),
    (
        ["dist.start_method=fork", "dist.backend=gloo", "dist.nproc_per_node=4"],
        TWO_V100,
        "use dist.start_method=auto (forkserver where there are GPUs) or spawn",
    ),
    (["trainer.precision=bf16"], TWO_V100, "no native bf16 (compute capability below 8.0)"),
    (["trainer.compile=true"], Devices(gpus=1, bf16=True), "needs triton to compile for the GPU"),
]

#: Layouts that work: one rank per GPU, more CPU ranks with gloo, anything on a CPU machine.
ACCEPTED = [
    (["dist.nproc_per_node=1"], H100),
    (["dist.nproc_per_node=auto", "dist.backend=nccl"], TWO_V100),
    (["dist.nproc_per_node=4", "dist.backend=gloo"], H100),
    (["dist.nproc_per_node=4", "dist.start_method=fork"], CPU),
    (["trainer.precision=bf16"], CPU),
    (["trainer.precision=bf16", "dist.nproc_per_node=2", "dist.backend=gloo"], TWO_V100),
    (["trainer.precision=fp16", "dist.start_method=spawn"], TWO_V100),
    (["trainer.compile=true"], H100),
]


@pytest.mark.parametrize("overrides, devices, words", REFUSED, ids=lambda v: str(v))
def test_layouts_that_cannot_work_are_refused_in_one_line(overrides, devices, words):
    with pytest.raises(ConfigError) as refused:
        check_devices(job(*overrides), devices)
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_compile_on_cpu_needs_a_cpp_compiler(monkeypatch):
    import launch.config.checks as checks

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(checks.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="neither g.. nor clang.. is on the PATH"):
        check_devices(job("trainer.compile=true"), CPU)
    monkeypatch.setattr(checks.shutil, "which", lambda name: f"/usr/bin/{name}")
    check_devices(job("trainer.compile=true"), CPU)


@pytest.mark.parametrize("overrides, devices", ACCEPTED, ids=lambda v: str(v))
def test_layouts_that_work_are_accepted(overrides, devices):
    check_devices(job(*overrides), devices)


def test_the_launcher_asks_torch_for_the_gpus_before_any_rank_starts(monkeypatch, tmp_path):
    """A machine with one GPU, as torch shows it; nothing is written (and, in-process, no
    forkserver is started: see conftest)."""
    import launch.cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    run_dir = tmp_path / "run"
    for overrides, words in [
        (["dist.nproc_per_node=2"], "dist.nproc_per_node=2 with dist.backend=auto"),
        (["dist.start_method=fork"], "dist.start_method=fork: this node shows 1 CUDA GPU"),
    ]:
        with pytest.raises(ConfigError, match=words):
            launch.cli.Launch([*overrides, f"hydra.run.dir={run_dir}"]).prepare()
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["trainer.precision=fp8"], "trainer.precision='fp8': expected one of fp32, bf16, fp16"),
        (["trainer.compile=yes"], "trainer.compile='yes': expected true or false"),
        (["trainer.amp=true", "trainer.precision=fp32"], "trainer.amp=true asks for autocast"),
    ],
)
def test_precision_and_compile_values_are_checked(overrides, words):
    from launch.config.overrides import check_override_keys
    from launch.config.schema import GROUPS

    with pytest.raises(ConfigError, match=words):
        check_override_keys(overrides, GROUPS)
        check_config(job(*overrides))


def test_auto_start_method_is_fork_on_cpu_and_the_forkserver_with_cuda(monkeypatch):
    from launch.job import forkserver
    from launch.job.agent import start_method

    cfg = job_config(compose([]))
    as_config = type("Cfg", (), {"dist": type("Dist", (), cfg["dist"])})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert start_method(as_config) == "fork"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert start_method(as_config) == "forkserver"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # every GPU hidden: no server started early
    assert not forkserver.wanted("auto") and not forkserver.wanted("spawn")
    assert forkserver.wanted("forkserver")


def test_nccl_on_a_machine_without_gpus_ends_before_any_rank_with_exit_2(tmp_path):
    run = launch(f"hydra.run.dir={tmp_path / 'run'}", "dist.backend=nccl", timeout=60)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == (
        "error: dist.backend=nccl needs CUDA GPUs and this node shows none: use "
        "dist.backend=gloo (or auto)"
    )
    assert not (tmp_path / "run").exists()


def test_ranks_forked_from_the_forkserver_train_and_stop_on_ctrl_c(tmp_path):
    """The start method used where there are GPUs, on the CPU: the recipe runs, the launcher
    forwards Ctrl-C to ranks that are its forkserver's children, a checkpoint is saved."""
    run = launch(
        f"hydra.run.dir={tmp_path}",
        *SHORT,
        "dist.start_method=forkserver",
        "task.entrypoint=tests.launcher.entry_points:train_and_ctrl_c",
        env={"CTRL_C": "group"},
    )
    assert run.returncode == 75, run.stderr
    assert "checkpoint saved: " in run.stderr and "Traceback" not in run.stderr
    stop = json.loads((tmp_path / "stop.json").read_text())
    assert stop["reason"] == "preempted" and 31 <= stop["iteration"] < 88


# ---------------------------------------------------------------- on a GPU machine
@pytest.mark.gpu
def test_default_job_on_one_gpu(tmp_path):
    """The default job with one rank: CUDA, ranks from the forkserver, 95% accuracy."""
    launch(f"hydra.run.dir={tmp_path}", "dist.nproc_per_node=1", cuda=True, check=True)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["world_size"] == 1 and summary["validation"]["accuracy"] >= 0.95


@pytest.mark.gpu
def test_nccl_with_one_rank_computes_on_the_gpu(tmp_path):
    launch(
        f"hydra.run.dir={tmp_path}",
        "dist.backend=nccl",
        "dist.nproc_per_node=1",
        "task.entrypoint=tests.launcher.entry_points:report_device",
        cuda=True,
        check=True,
    )
    seen = json.loads((tmp_path / "device0.json").read_text())
    assert seen == {"device": "cuda:0", "backend": None, "sum": 1.0}  # one rank: no group


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_precision_and_compile_on_the_gpu(tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no native bf16")
    run = launch(
        f"hydra.run.dir={tmp_path}",
        "dist.nproc_per_node=1",
        f"trainer.precision={precision}",
        "trainer.compile=true",
        "trainer.max_epochs=3",
        "trainer.progress_bar=false",
        cuda=True,
        timeout=600,
        check=True,
    )
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["validation"]["accuracy"] >= 0.9, run.stdout


@pytest.mark.gpu
def test_more_ranks_than_gpus_and_fork_are_refused_on_this_machine(tmp_path):
    gpus = torch.cuda.device_count()
    for overrides, words in [
        ([f"dist.nproc_per_node={gpus + 1}"], "nccl needs a GPU per rank"),
        (["dist.start_method=fork"], "dist.start_method=fork: this node shows"),
    ]:
        run = launch(f"hydra.run.dir={tmp_path / 'run'}", *overrides, cuda=True, timeout=120)
        assert run.returncode == 2 and words in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
