"""The launcher tests' shared run (an uninterrupted short training, the reference for resumes),
and no forkserver started by the in-process checks."""

import pytest

from tests.launcher.launching import launch
from tests.launcher.weights import SHORT, final_weights


@pytest.fixture(scope="session")
def default_job(tmp_path_factory):
    """The default job, its output to pipes (as in CI): (run folder, CompletedProcess)."""
    run_dir = tmp_path_factory.mktemp("default_job")
    return run_dir, launch(f"hydra.run.dir={run_dir}", check=True)


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory):
    """The final weights of a 4-epoch run that nothing interrupted."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    launch(f"hydra.run.dir={run_dir}", *SHORT, check=True)
    return final_weights(run_dir)


@pytest.fixture(autouse=True)
def no_forkserver_in_process(monkeypatch):
    """``Launch(...).prepare()`` in the test process starts no forkserver for the ranks (on a
    GPU machine ``dist.start_method=auto`` would); launched subprocesses still do."""
    import launch.cli

    monkeypatch.setattr(launch.cli, "start_early", lambda start_method: None)
