"""The hang watchdog pauses while torch compiles: a first evaluation's recompile is not a hang.

A compile backend that sleeps 3 watchdog timeouts stands in for a slow compile; the
trainer compiled at its first iteration, the evaluator recompiles (eval mode, no
gradients) right after the first epoch, while the watchdog is armed.
"""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys, time
    import torch
    from torch import nn
    import distengine.handlers.watchdog as watchdog
    from distengine.engine import Events, create_supervised_evaluator, create_supervised_trainer
    from distengine.handlers import HangWatchdog
    from launch.recipe.speed import compile_model

    if sys.argv[1] == "unaware":  # the watchdog as it was before it knew of compiles
        watchdog._watch_compiles = lambda: None
    compiles = []

    def slow_backend(graph, example_inputs):
        compiles.append(len(compiles))
        time.sleep(1.5)
        return graph.forward

    torch.manual_seed(0)
    model = compile_model(nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 2)),
                          backend=slow_backend)
    trainer = create_supervised_trainer(model, torch.optim.SGD(model.parameters(), 0.1),
                                        nn.CrossEntropyLoss())
    evaluator = create_supervised_evaluator(model)
    watchdog = HangWatchdog(timeout_s=0.5)
    watchdog.attach(trainer)
    watchdog.attach(evaluator, final=False)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run(data))
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(6)]
    trainer.run(data, max_epochs=2)
    print("finished", len(compiles), list(model.state_dict()))
""")


def run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("mode", ["aware", "unaware"])
def test_a_recompile_at_the_first_evaluation_is_not_a_hang(mode):
    done = run(mode)
    if mode == "unaware":  # the stand-in is slow enough to be taken for a hang
        assert done.returncode != 0 and "Timeout (0:00:00.500000)!" in done.stderr
        return
    assert done.returncode == 0, done.stderr[-3000:]
    # one compile for training, one for evaluation; the parameters keep their names
    assert done.stdout.strip() == "finished 2 ['0.weight', '0.bias', '2.weight', '2.bias']"
