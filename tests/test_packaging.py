"""The wheel, installed alone into a fresh virtual environment, runs a job outside the repo.

The new environment sees torch, Hydra and the rest through a ``.pth`` line
naming this environment's site-packages (installing them again would take
minutes); distengine and launch come from the wheel only (``--no-deps``).
"""

import dataclasses
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from launch.config.schema import GROUPS

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "setup.py", "README.md", "distengine", "launch", "conf"]
TINY_MODEL = """\
# a user's own model option, in their own config folder
_target_: launch.recipe.models.mlp
in_features: 64
hidden: 16            # a small hidden layer
num_classes: 10
"""


def run(*command, cwd, timeout=120):
    prefixes = ("PYTHON", "TORCHELASTIC", "DISTENGINE")  # nothing points back into the repo
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with only the wheel installed: its python."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:  # a clean copy: the build writes nothing into the repo
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(ROOT / name, source / name)
    wheels = tmp / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source, cwd=tmp)
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin" / "python"
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = wheels.glob("distengine-*.whl")
    run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel, cwd=tmp)
    return python, site


def test_the_wheel_runs_a_job_outside_the_repo_with_a_users_config_folder(installed, tmp_path):
    python, site = installed
    where = run(
        python,
        "-c",
        "import launch, distengine; print(launch.__file__, distengine.__file__)",
        cwd=tmp_path,
    ).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    assert (site / "launch" / "conf" / "config.yaml").is_file()
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "tiny.yaml").write_text(TINY_MODEL)
    done = run(
        python,
        "-m",
        "launch",
        "--config-dir",
        "my_conf",
        "model=tiny",
        "trainer.max_epochs=1",
        "dist.nproc_per_node=2",
        "dist.backend=gloo",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert "epoch 1  validation  accuracy=" in done.stdout
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert "hidden: 16" in (tmp_path / "run" / "config.yaml").read_text()
    assert not (tmp_path / "run" / "cli.log").exists()


def test_help_lists_every_key_on_one_line(installed, tmp_path):
    python, _ = installed
    text = run(python, "-m", "launch", "--help", cwd=tmp_path).stdout
    lines = text.splitlines()
    for group, schema in GROUPS.items():
        for field in dataclasses.fields(schema):
            found = [line for line in lines if line.strip().startswith(f"{group}.{field.name}=")]
            assert len(found) == 1, f"{group}.{field.name}: {found}"
    for key in ("model.hidden=128", "data.batch_size=64", "optim.lr=0.003"):
        assert any(line.strip().startswith(key) for line in lines), key
    assert "model=mlp (options: cnn, mlp, transformer)" in text and "--config-dir DIR" in text
