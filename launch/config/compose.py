"""Compose the config once, before Hydra's own run, so that every error is one line.

``@hydra.main`` writes ``.hydra/`` into the run folder before the task
function runs, and reports a missing group option or malformed YAML in
several lines with exit code 1. Composing first with Hydra's compose API
lets the launcher refuse bad input (exit 2) before anything is written, and
tells it the run folder (to check that it is free).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch.config.errors import ConfigError


def _conf_dir() -> Path:
    """The launcher's own configs: ``launch/conf`` when installed (a wheel), else ``conf/``."""
    here = Path(__file__).resolve()
    installed = here.parents[1] / "conf"
    return installed if installed.is_dir() else here.parents[2] / "conf"


CONF_DIR = str(_conf_dir())
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
    """The command line split into Hydra overrides and flags.

    ``--config-dir DIR`` (a user's folder of configs, searched after the
    launcher's own) and ``--config-name NAME`` (the primary config) are read
    here and also left to Hydra; other flags (``--cfg``, ``--hydra-help``...)
    only Hydra handles.
    """

    overrides: list[str]
    multirun: bool
    other_flags: bool  # --cfg, --info, --hydra-help...: Hydra handles those itself
    config_dir: str | None = None
    config_name: str = "config"
    help: bool = False
    prints_config: bool = False  # --cfg job|hydra|all: Hydra prints the config and exits

    @classmethod
    def parse(cls, argv: list[str]) -> CommandLine:
        line = cls(overrides=[], multirun=False, other_flags=False)
        args = iter(argv)
        for arg in args:
            flag, given, value = arg.partition("=")
            if not arg.startswith("-"):
                line.overrides.append(arg)
            elif arg in MULTIRUN_FLAGS:
                line.multirun = True
            elif arg in ("-h", "--help"):
                line.help = True
            elif flag in VALUE_FLAGS:
                value = value if given else next(args, "")
                if VALUE_FLAGS[flag]:
                    setattr(line, VALUE_FLAGS[flag], value)
                else:
                    line.other_flags = True
                    line.prints_config |= flag in ("--cfg", "-c")
            else:
                line.other_flags = True
        return line

    def config_flags(self) -> list[str]:
        """``--config-dir <absolute DIR>`` and ``--config-name NAME`` as given (for a resume)."""
        flags = []
        if self.config_dir is not None:
            flags += ["--config-dir", str(Path(self.config_dir).expanduser().resolve())]
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


def sweep_points(overrides: list[str]) -> list[list[str]]:
    """Overrides to check for a multirun: each swept value once (not every combination)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = _parse(OverridesParser.create(), overrides)
    firsts = [_with_value(o, next(iter(_values(o)))) for o in parsed]
    points = [firsts]
    for i, override in enumerate(parsed):
        for value in list(_values(override))[1:]:
            points.append([*firsts[:i], _with_value(override, value), *firsts[i + 1 :]])
    return points


def swept_keys(overrides: list[str]) -> set[str]:
    """The keys a multirun sweeps (``optim.lr=0.1,0.01`` sweeps ``optim.lr``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = _parse(OverridesParser.create(), overrides)
    return {o.get_key_element() for o in parsed if o.is_sweep_override()}


def _parse(parser: Any, overrides: list[str]) -> list[Any]:
    from hydra.errors import OverrideParseException

    try:
        return parser.parse_overrides(overrides)
    except OverrideParseException as error:
        raise ConfigError(f"cannot parse an override: {_first_line(error)}") from None


def _values(override: Any) -> list[str]:
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def _with_value(override: Any, value: str) -> str:
    return f"{override.get_key_element()}={value}"


def search_path(config_dir: str | None) -> list[str]:
    """The override that adds a user's config folder, as Hydra's ``--config-dir`` does."""
    if config_dir is None:
        return []
    folder = Path(config_dir).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"--config-dir {config_dir}: no such folder")
    return [f"hydra.searchpath=[file://{folder}]"]


def compose(overrides: list[str], config_dir: str | None = None, name: str = "config") -> Any:
    """The composed config (with its ``hydra`` node), or a one-line ConfigError.

    ``config_dir``: a user's folder of configs, searched after the launcher's
    own (``--config-dir``); ``name``: the primary config (``--config-name``).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from launch.config.schema import register

    register()
    extra = search_path(config_dir)
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = hydra_compose(name, overrides=[*overrides, *extra], return_hydra_config=True)
        for key in cfg:  # interpolation errors surface here (hydra's own node is Hydra's)
            value = cfg[key] if key != "hydra" else None
            if OmegaConf.is_config(value):
                OmegaConf.to_container(value, resolve=True)
    except Exception as error:
        raise ConfigError(explain(error)) from None
    return cfg


def explain(error: BaseException) -> str:
    """One line for the errors Hydra, OmegaConf and YAML raise while composing."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(error, OverrideParseException):
        return f"cannot parse the override {error.override!r}: {_first_line(error)}"
    cause = error.__cause__ or error
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, option = str(error.missing_cfg_file).rpartition("/")
        if group:
            options = ", ".join(error.options or []) or "none"
            return f"{group}={option}: no such option; {group} accepts {options}"
        return f"no config named {option!r} in {CONF_DIR} (or a --config-dir)"
    mark = getattr(cause, "problem_mark", None)
    if mark is not None:
        return (
            f"malformed YAML in {mark.name} line {mark.line + 1}, column {mark.column + 1}: "
            f"{getattr(cause, 'problem', '') or _first_line(cause)}"
        )
    key = getattr(cause, "full_key", None)
    if key:
        return f"{key}: {_first_line(cause)}"
    return _first_line(cause if str(cause) else error)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def job_config(cfg: Any) -> dict[str, Any]:
    """The job's part of a composed config (without ``hydra``), resolved, as plain data."""
    from omegaconf import OmegaConf

    return {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in ((k, cfg[k]) for k in cfg if k != "hydra")
    }
