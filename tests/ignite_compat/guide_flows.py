"""Two user scripts written for PyTorch-Ignite, run with only their imports changed.

``SEED_FLOW`` is the flow of ARCHITECTURE.md's first code block (Ignite's
"How to convert pure PyTorch code to Ignite": a ``train_step``, a
``validation_step``, Accuracy, validation every N epochs, a progress bar and a
Checkpoint). ``GETTING_STARTED`` is Ignite's quick-start: the supervised
factories, Accuracy and Loss on two evaluators sharing one metrics dict, loss
logging every N iterations, a ModelCheckpoint of the best model and a
TensorboardLogger. ``DISTRIBUTED`` is the seed flow with Ignite's
``idist.auto_*`` calls, as its distributed how-to adds them. Each script is
the Ignite text; :func:`script` swaps ``ignite`` for ``distengine`` in its
imports only.
"""

from __future__ import annotations

import os
from typing import Any

import torch

IMPORTS = """
import ignite.distributed as idist
from ignite.engine import Engine, Events, create_supervised_evaluator, create_supervised_trainer
from ignite.handlers import (
    Checkpoint,
    ModelCheckpoint,
    ProgressBar,
    TensorboardLogger,
    global_step_from_engine,
)
from ignite.metrics import Accuracy, Loss
"""

SETUP = """
import torch
from torch import nn

torch.manual_seed(0)
x = torch.randn(64, 4)
y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
train_set = torch.utils.data.TensorDataset(x, y)
val_set = torch.utils.data.TensorDataset(x[:40], y[:40])
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
criterion = nn.CrossEntropyLoss()
"""

SEED_FLOW = """
train_loader = torch.utils.data.DataLoader(train_set, batch_size=16)
val_loader = torch.utils.data.DataLoader(val_set, batch_size=16)
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
validate_every, checkpoint_every, max_epochs = 1, 2, 4
checkpoint_dir = "checkpoints/"


def train_step(engine, batch):
    model.train()
    optimizer.zero_grad()
    x, y = batch[0], batch[1]
    y_pred = model(x)
    loss = criterion(y_pred, y)
    loss.backward()
    optimizer.step()
    return loss.item()


def validation_step(engine, batch):
    model.eval()
    with torch.no_grad():
        x, y = batch[0], batch[1]
        y_pred = model(x)
        return y_pred, y


trainer = Engine(train_step)
evaluator = Engine(validation_step)
val_metrics = {"accuracy": Accuracy(), "loss": Loss(criterion)}
for name, metric in val_metrics.items():
    metric.attach(evaluator, name)


@trainer.on(Events.EPOCH_COMPLETED(every=validate_every))
def run_validation():
    evaluator.run(val_loader)


@trainer.on(Events.EPOCH_COMPLETED(every=validate_every))
def log_validation():
    metrics = evaluator.state.metrics
    print(f"Epoch: {trainer.state.epoch},  Accuracy: {metrics['accuracy']:.4f}")


ProgressBar().attach(trainer)
to_save = {"model": model, "optimizer": optimizer, "trainer": trainer}
checkpointer = Checkpoint(to_save=to_save, save_handler=checkpoint_dir, n_saved=2)
trainer.add_event_handler(Events.EPOCH_COMPLETED(every=checkpoint_every), checkpointer)
trainer.run(train_loader, max_epochs=max_epochs)
"""

DISTRIBUTED = SEED_FLOW.replace(
    "train_loader = torch.utils.data.DataLoader(train_set, batch_size=16)\n"
    "val_loader = torch.utils.data.DataLoader(val_set, batch_size=16)\n"
    "optimizer = torch.optim.SGD(model.parameters(), lr=0.5)\n",
    "model = idist.auto_model(model)\n"
    "train_loader = idist.auto_dataloader(train_set, batch_size=16)\n"
    "val_loader = idist.auto_dataloader(val_set, batch_size=16)\n"
    "optimizer = idist.auto_optim(torch.optim.SGD(model.parameters(), lr=0.5))\n",
)

GETTING_STARTED = """
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = model.to(device)
train_loader = torch.utils.data.DataLoader(train_set, batch_size=16, shuffle=True)
val_loader = torch.utils.data.DataLoader(val_set, batch_size=16, shuffle=False)
optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
trainer = create_supervised_trainer(model, optimizer, criterion, device)
val_metrics = {"accuracy": Accuracy(), "loss": Loss(criterion)}
train_evaluator = create_supervised_evaluator(model, metrics=val_metrics, device=device)
val_evaluator = create_supervised_evaluator(model, metrics=val_metrics, device=device)
log_interval = 3


@trainer.on(Events.ITERATION_COMPLETED(every=log_interval))
def log_training_loss(engine):
    e = engine.state
    print(f"Epoch[{e.epoch}], Iter[{e.iteration}] Loss: {e.output:.2f}")


@trainer.on(Events.EPOCH_COMPLETED)
def log_training_results(trainer):
    train_evaluator.run(train_loader)
    metrics = train_evaluator.state.metrics
    print(
        f"Training Results - Epoch[{trainer.state.epoch}] "
        f"Avg accuracy: {metrics['accuracy']:.2f} Avg loss: {metrics['loss']:.2f}"
    )


@trainer.on(Events.EPOCH_COMPLETED)
def log_validation_results(trainer):
    val_evaluator.run(val_loader)
    metrics = val_evaluator.state.metrics
    print(
        f"Validation Results - Epoch[{trainer.state.epoch}] "
        f"Avg accuracy: {metrics['accuracy']:.2f} Avg loss: {metrics['loss']:.2f}"
    )


def score_function(engine):
    return engine.state.metrics["accuracy"]


model_checkpoint = ModelCheckpoint(
    "checkpoint",
    n_saved=2,
    filename_prefix="best",
    score_function=score_function,
    score_name="accuracy",
    global_step_transform=global_step_from_engine(trainer),
)
val_evaluator.add_event_handler(Events.COMPLETED, model_checkpoint, {"model": model})
tb_logger = TensorboardLogger(log_dir="tb-logger")
tb_logger.attach_output_handler(
    trainer,
    event_name=Events.ITERATION_COMPLETED(every=3),
    tag="training",
    output_transform=lambda loss: {"batch_loss": loss},
)
for tag, evaluator in [("training", train_evaluator), ("validation", val_evaluator)]:
    tb_logger.attach_output_handler(
        evaluator,
        event_name=Events.EPOCH_COMPLETED,
        tag=tag,
        metric_names="all",
        global_step_transform=global_step_from_engine(trainer),
    )
trainer.run(train_loader, max_epochs=4)
tb_logger.close()
evaluator = val_evaluator
"""

FLOWS = {"seed": SEED_FLOW, "getting_started": GETTING_STARTED, "distributed": DISTRIBUTED}


def script(flow: str, library: str) -> str:
    """The flow's Ignite script, its imports switched to ``library``."""
    imports = IMPORTS if library == "ignite" else IMPORTS.replace("ignite", library)
    return imports + SETUP + FLOWS[flow]


def run_flow(flow: str, library: str, workdir: str) -> dict[str, Any]:
    """Run the flow in ``workdir``; what it printed, its weights, metrics and files."""
    printed: list[str] = []
    namespace: dict[str, Any] = {"print": lambda *a, **k: printed.append(" ".join(map(str, a)))}
    here = os.getcwd()
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    try:
        exec(compile(script(flow, library), f"<{flow} flow, {library}>", "exec"), namespace)
    finally:
        os.chdir(here)
    model = namespace["model"]
    model = getattr(model, "module", model)
    files = sorted(
        os.path.relpath(os.path.join(root, name), workdir)
        for root, _, names in os.walk(workdir)
        for name in names
        if name.endswith(".pt") and not name.startswith(".")
    )
    metrics = namespace["evaluator"].state.metrics
    return {
        "printed": printed,
        "weights": [p.detach().clone() for p in model.parameters()],
        "metrics": {k: float(v) for k, v in metrics.items()},
        "files": files,
        "iteration": namespace["trainer"].state.iteration,
        "world_size": torch.distributed.get_world_size()
        if torch.distributed.is_initialized()
        else 1,
    }
