"""The launcher tests' shared run: an uninterrupted short training, the reference for resumes."""

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
