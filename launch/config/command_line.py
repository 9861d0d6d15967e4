"""The launcher's command line: Hydra overrides, Hydra's flags, and a script's own arguments."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from launch.config.errors import ConfigError

MULTIRUN_FLAGS = ("-m", "--multirun")
#: Hydra's flags that take a value; the launcher reads the config folder and name.
VALUE_FLAGS = {
    "--config-dir": "config_dir",
    "-cd": "config_dir",
    "--config-name": "config_name",
    "-cn": "config_name",
    "--config-path": "",
    "-cp": "",
    "--cfg": "",
    "-c": "",
    "--package": "",
    "-p": "",
}


@dataclass
class CommandLine:
    """The command line split into Hydra overrides, flags, and the script's own arguments.

    ``--config-dir DIR`` (a user's folder of configs, searched after the
    launcher's own, as Hydra does) and ``--config-name NAME`` (the primary
    config: a name in those folders, or the path of a ``.yaml`` file) are read
    here, in any of Hydra's forms (``-cd``, ``-cn``, ``--config-name=NAME``);
    other flags (``--cfg``, ``--hydra-help``...) only Hydra handles.
    Everything after ``--`` goes to ``task.script``, as torchrun passes a
    script's arguments: it becomes the override ``task.args=[...]``, quoted
    so that Hydra reads each argument back as typed.

    Example::

        line = CommandLine.parse(["task.script=main.py", "--", "run", "--backend=gloo"])
        line.overrides   # ["task.script=main.py", "task.args=['run','--backend=gloo']"]
    """

    overrides: list[str]
    multirun: bool
    other_flags: bool  # --cfg, --info, --hydra-help...: Hydra handles those itself
    config_dir: str | None = None
    config_name: str = "config"
    help: bool = False
    prints_config: bool = False  # --cfg job|hydra|all: Hydra prints the config and exits
    flags: list[str] = field(default_factory=list)  # Hydra's flags other than the config's
    script_args: list[str] | None = None  # what came after ``--``

    @classmethod
    def parse(cls, argv: list[str]) -> CommandLine:
        """Split ``argv``; a ConfigError for a config flag without its value or a clash."""
        line = cls(overrides=[], multirun=False, other_flags=False)
        args = iter(argv)
        for arg in args:
            flag, given, value = arg.partition("=")
            if arg == "--":
                line.script_args = list(args)
            elif not arg.startswith("-"):
                line.overrides.append(arg)
            elif arg in MULTIRUN_FLAGS:
                line.multirun = True
            elif arg in ("-h", "--help"):
                line.help = True
            elif flag in VALUE_FLAGS:
                value = value if given else next(args, "")
                if VALUE_FLAGS[flag]:
                    setattr(line, VALUE_FLAGS[flag], _config_flag(flag, value))
                    continue
                line.other_flags = True
                line.prints_config |= flag in ("--cfg", "-c")
                line.flags += [flag, value]
            else:
                line.other_flags = True
                line.flags.append(arg)
        line._primary_from_path()
        line._add_script_args()
        return line

    def _primary_from_path(self) -> None:
        """``--config-name my_conf/myexp.yaml``: the folder joins the search path, as
        ``--config-dir my_conf --config-name myexp`` would."""
        name = Path(self.config_name).expanduser()
        if len(name.parts) == 1 and not name.is_absolute():
            return
        if not name.is_file() and not name.with_suffix(".yaml").is_file():
            raise ConfigError(f"--config-name {self.config_name}: no such config file")
        folder = name.resolve().parent
        given = Path(self.config_dir).expanduser().resolve() if self.config_dir else None
        if given not in (None, folder):
            raise ConfigError(
                f"--config-name {self.config_name} is a file outside --config-dir "
                f"{self.config_dir}: give the folder once (--config-dir) and the name in it"
            )
        self.config_dir, self.config_name = str(folder), name.name.removesuffix(".yaml")

    def _add_script_args(self) -> None:
        if self.script_args is None:
            return
        if self.gives("task.args"):
            raise ConfigError(
                "the script's arguments are given twice: after -- and in task.args; give them once"
            )
        quoted = ",".join(hydra_quoted(arg) for arg in self.script_args)
        self.overrides.append(f"task.args=[{quoted}]")

    def hydra_argv(self) -> list[str]:
        """The command line as Hydra reads it: the overrides (the script's arguments among
        them), the config flags in one form (an absolute ``--config-dir``), the other flags."""
        multirun = ["--multirun"] if self.multirun else []
        return [*self.overrides, *multirun, *self.config_flags(), *self.flags]

    def config_flags(self) -> list[str]:
        """``--config-dir <absolute DIR>`` and ``--config-name NAME`` as given (for a resume)."""
        flags = []
        if self.config_dir is not None:
            flags += ["--config-dir", str(config_folder(self.config_dir))]
        if self.config_name != "config":
            flags += ["--config-name", self.config_name]
        return flags

    def gives(self, key: str) -> bool:
        """Whether an override sets ``key`` (``hydra.run.dir``)."""
        return any(o.lstrip("+~").split("=", 1)[0] == key for o in self.overrides)

    def value(self, key: str, default: str) -> str:
        """The value the last override of ``key`` gives it, as written, else ``default``."""
        given = [o.split("=", 1)[1] for o in self.overrides if o.split("=", 1)[0] == key]
        return given[-1] if given else default


def _config_flag(flag: str, value: str) -> str:
    if not value.strip():
        what = "a folder of configs" if "d" in flag.removeprefix("--config-") else "a config name"
        raise ConfigError(f"{flag}={value!r}: expected {what}")
    return value


def config_folder(config_dir: str) -> Path:
    """``--config-dir`` as an absolute folder; a ConfigError when there is no such folder."""
    folder = Path(config_dir).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"--config-dir {config_dir}: no such folder")
    return folder


def hydra_quoted(arg: str) -> str:
    """``arg`` as a quoted Hydra override value that reads back as exactly ``arg``.

    Backslashes before a quote, the end or ``${`` are doubled, quotes and
    ``${`` (an interpolation) escaped: ``it's`` -> ``'it\\'s'``.
    """
    body = re.sub(r"(\\+)(?='|$|\$\{)", lambda m: m.group(1) * 2, arg)
    body = body.replace("'", "\\'").replace("${", "\\${")
    return f"'{body}'"
