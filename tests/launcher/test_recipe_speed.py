"""The recipe's precision and compile options: from the config to the training step."""

import glob
import os
import re

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from launch.recipe.speed import amp_options, compile_model
from tests.launcher.launching import launch


@pytest.mark.parametrize(
    "amp, precision, expected",
    [
        (False, None, (None, None)),
        (True, None, ("amp", None)),  # the device's usual dtype: bf16 on CPU, fp16 on CUDA
        (False, "fp32", (None, None)),
        (False, "bf16", ("amp", torch.bfloat16)),
        (True, "bf16", ("amp", torch.bfloat16)),
        (False, "fp16", ("amp", torch.float16)),
    ],
)
def test_precision_chooses_the_autocast_dtype(amp, precision, expected):
    trainer = OmegaConf.create({"amp": amp, "precision": precision})
    options = amp_options(trainer)
    assert (options["amp_mode"], options["amp_dtype"]) == expected


def test_compile_keeps_the_module_its_names_and_its_train_eval_switch():
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    eager = {k: v.clone() for k, v in net.state_dict().items()}
    counters.clear()
    model = compile_model(net, backend="eager")
    assert model is net and list(model.state_dict()) == list(eager)
    x = torch.randn(16, 4)
    torch.manual_seed(1)
    model(x).sum().backward()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval mode reached the compiled code
    assert counters["stats"]["unique_graphs"] == 2  # training, then evaluation


def test_fp16_from_the_config_reaches_the_training_step(tmp_path):
    """fp16 autocast with a GradScaler, on the CPU: the scaler's state is in the checkpoint."""
    launch(
        f"hydra.run.dir={tmp_path}",
        "dist.nproc_per_node=1",
        "trainer.precision=fp16",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        check=True,
    )
    newest = max(glob.glob(f"{tmp_path}/checkpoints/checkpoint_*.pt"), key=os.path.getmtime)
    step = torch.load(newest, weights_only=True)["trainer"]["__per_rank__"][0]
    assert step["process_function"]["scaler"]["scale"] > 0


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    """trainer.compile=true on 2 CPU ranks (inductor's C++ backend): it trains as eager does."""
    compiled, eager = tmp_path / "compiled", tmp_path / "eager"
    common = ["trainer.max_epochs=2", "trainer.progress_bar=false"]
    run = launch(
        f"hydra.run.dir={compiled}", *common, "trainer.compile=true", timeout=600, check=True
    )
    launch(f"hydra.run.dir={eager}", *common, check=True)
    lines = run.stdout.splitlines()  # the long first step is said, and how long it took
    first = lines.index("compiling the model with torch.compile (the first training iteration)...")
    assert re.fullmatch(r"compiled: the first training iteration took \d+\.\d s", lines[first + 1])
    assert "compiling the model with torch.compile (the first validation)..." in lines
    import json

    ours = json.loads((compiled / "metrics.json").read_text())["validation"]
    theirs = json.loads((eager / "metrics.json").read_text())["validation"]
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=0.02)
