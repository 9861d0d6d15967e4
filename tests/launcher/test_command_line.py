"""The command line as Hydra and torchrun users type it: ``--config-dir``/``--config-name`` in
every form, with the guide's own experiment file, and a script's arguments after ``--``."""

import json
import re

import pytest
import yaml

from launch.config.command_line import CommandLine
from launch.config.compose import compose, job_config
from tests.launcher.launching import ROOT, launch

#: A script's arguments that Hydra's override grammar would otherwise read (quotes, commas,
#: brackets, an equals sign, an interpolation, backslashes, a space, nothing).
TRICKY = ["run", "--backend=gloo", "a,b", "[x]", "it's", "${HOME}", "back\\slash\\", "a b", ""]


def guide_experiment() -> str:
    """The ``my_conf/myexp.yaml`` block of the guide, as written there."""
    guide = (ROOT / "docs" / "guide.md").read_text()
    blocks = re.findall(r"```yaml\n(# my_conf/myexp\.yaml\n.*?)```", guide, flags=re.S)
    assert len(blocks) == 1, "the guide shows my_conf/myexp.yaml once"
    return blocks[0]


@pytest.fixture
def my_conf(tmp_path):
    folder = tmp_path / "my_conf"
    folder.mkdir()
    (folder / "myexp.yaml").write_text(guide_experiment())
    return folder


def composed(argv: list[str]) -> dict:
    line = CommandLine.parse(argv)
    return job_config(compose(line.overrides, line.config_dir, line.config_name))


def test_every_form_of_the_config_flags_makes_the_guides_file_the_primary_config(
    my_conf, monkeypatch
):
    monkeypatch.chdir(my_conf.parent)
    forms = [
        ["--config-dir", "my_conf", "--config-name", "myexp"],
        ["--config-dir=my_conf", "--config-name=myexp"],
        ["-cd", str(my_conf), "-cn", "myexp.yaml"],
        ["--config-name", str(my_conf / "myexp.yaml")],
        ["--config-name=my_conf/myexp.yaml", f"--config-dir={my_conf}"],
    ]
    for argv in forms:
        job = composed(argv)
        assert job["model"]["_target_"] == "launch.recipe.models.small_cnn", argv
        assert (job["data"]["image"], job["optim"]["lr"], job["trainer"]["seed"]) == (
            True,
            0.001,
            7,
        ), argv
        assert job["dist"]["nproc_per_node"] == "auto" and job["checkpoint"]["n_saved"] == 2
    line = CommandLine.parse(["-cn", "myexp", "-cd", "my_conf", "-m", "optim.lr=1,2", "--cfg=job"])
    assert line.hydra_argv() == [
        "optim.lr=1,2",
        "--multirun",
        "--config-dir",
        str(my_conf),
        "--config-name",
        "myexp",
        "--cfg",
        "job",
    ]


def test_the_script_gets_the_arguments_after_dashes_on_every_rank_with_a_config_name(
    my_conf, tmp_path
):
    """One job: the guide's experiment as the primary config, a script whose arguments come
    after ``--``; each rank writes its ``sys.argv``, the run folder the resolved config."""
    run_dir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    script = ROOT / "tests/launcher/script.py"
    done = launch(
        f"--config-dir={my_conf}",
        "-cn",
        "myexp",
        f"hydra.run.dir={run_dir}",
        f"task.script={script}",
        "--",
        str(out),
        *TRICKY,
        check=True,
    )
    for rank in range(2):
        seen = json.loads((out / f"script{rank}.json").read_text())
        assert (seen["rank"], seen["world"], seen["args"]) == (rank, 2, TRICKY)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["trainer"]["seed"] == 7 and config["optim"]["lr"] == 0.001
    assert config["model"]["_target_"] == "launch.recipe.models.small_cnn"
    assert "Traceback" not in done.stderr


def test_arguments_after_dashes_read_back_exactly_as_typed():
    """The quoting, without a job: the override Hydra composes gives each argument back."""
    line = CommandLine.parse(["task.script=README.md", "--", *TRICKY, "${oc.env:HOME}", "'"])
    assert line.overrides[0] == "task.script=README.md" and len(line.overrides) == 2
    assert composed(line.overrides)["task"]["args"] == [*TRICKY, "${oc.env:HOME}", "'"]
    assert CommandLine.parse(["task.script=x.py", "--"]).overrides[-1] == "task.args=[]"
