"""metrics.json across a resume, and the hyperparameters the recipe shows in TensorBoard."""

import json
from types import SimpleNamespace

import torch

from launch.config.compose import compose
from launch.recipe.reporting import History, hyperparameters


def engine(epoch, iteration, **metrics):
    return SimpleNamespace(state=SimpleNamespace(epoch=epoch, iteration=iteration, metrics=metrics))


def test_history_keeps_what_the_checkpoint_holds_and_goes_on(tmp_path):
    first = History(tmp_path)
    first.resumed(0)
    for epoch in (1, 2, 3):  # a run that validated 3 times, then was killed
        first.add(engine(epoch, 22 * epoch, loss=1.0 / epoch), engine(1, 6, accuracy=0.5 + epoch))
    again = History(tmp_path)
    again.resumed(44)  # its newest checkpoint held iteration 44: epoch 3 is done again
    again.add(engine(3, 66, loss=torch.tensor(0.25)), engine(1, 6, accuracy=torch.tensor(0.75)))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert [(e["epoch"], e["iteration"]) for e in saved["history"]] == [(1, 22), (2, 44), (3, 66)]
    assert saved["history"][-1] == {
        "epoch": 3,
        "iteration": 66,
        "validation": {"accuracy": 0.75},
        "train": {"loss": 0.25},
    }
    assert saved["validation"] == {"accuracy": 0.75} and saved["epoch"] == 3
    assert not list(tmp_path.glob(".metrics.json*"))  # written atomically


def test_hyperparameters_are_the_configs_values_by_their_keys():
    cfg = compose(["optim=sgd", "model=cnn", "data.image=true"])
    found = hyperparameters(cfg)
    assert found["optim"] == "torch.optim.SGD" and found["optim.momentum"] == 0.9
    assert found["model"] == "launch.recipe.models.small_cnn" and found["data.image"] is True
    assert found["world_size"] == 1 and found["trainer.max_epochs"] == 8
    assert not [k for k in found if k.endswith("_partial_") or "_target_" in k]
