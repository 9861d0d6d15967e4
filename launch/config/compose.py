"""Compose the config once, before Hydra's own run, so that every error is one line.

``@hydra.main`` writes ``.hydra/`` into the run folder before the task
function runs, and reports a missing group option or malformed YAML in
several lines with exit code 1. Composing first with Hydra's compose API
lets the launcher refuse bad input (exit 2) before anything is written, and
tells it the run folder (to check that it is free).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from launch.config.command_line import config_folder
from launch.config.errors import ConfigError
from launch.config.explain import explain, first_line


def _conf_dir() -> Path:
    """The launcher's own configs: ``launch/conf`` when installed (a wheel), else ``conf/``."""
    here = Path(__file__).resolve()
    installed = here.parents[1] / "conf"
    return installed if installed.is_dir() else here.parents[2] / "conf"


CONF_DIR = str(_conf_dir())


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
        raise ConfigError(f"cannot parse an override: {first_line(error)}") from None


def _values(override: Any) -> list[str]:
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def _with_value(override: Any, value: str) -> str:
    return f"{override.get_key_element()}={value}"


@contextmanager
def hydra_search_path(config_dir: str | None) -> Iterator[None]:
    """Hydra initialised as ``hydra.main`` would be with ``--config-dir config_dir``.

    The launcher's configs are the primary folder; a user's folder joins the
    search path before the structured schemas, where Hydra's own
    ``--config-dir`` puts it, so that ``--config-name`` finds a primary
    config there too (a ``hydra.searchpath`` override would come too late:
    Hydra reads it from the primary config).
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from hydra.version import setbase

    backup = get_gh_backup()
    try:
        setbase("1.3")
        search_path = create_config_search_path(CONF_DIR)
        if config_dir is not None:
            search_path.prepend(
                provider="command-line",
                path=f"file://{config_folder(config_dir)}",
                anchor=SearchPathQuery(provider="schema"),
            )
        GlobalHydra.instance().clear()
        Hydra.create_main_hydra2(task_name="app", config_search_path=search_path)
        yield
    finally:
        restore_gh_from_backup(backup)


def compose(overrides: list[str], config_dir: str | None = None, name: str = "config") -> Any:
    """The composed config (with its ``hydra`` node), or a one-line ConfigError.

    ``config_dir``: a user's folder of configs, searched after the launcher's
    own (``--config-dir``); ``name``: the primary config (``--config-name``),
    in either folder.
    """
    from launch.config.group_values import check_group_values
    from launch.config.schema import register

    register()
    if config_dir is not None:
        config_folder(config_dir)  # a missing folder is named as such
    check_group_values(overrides, lambda group: group_options(group, config_dir))
    try:
        return _compose(overrides, config_dir, name)
    except Exception as error:
        retry = lambda kept: _compose(kept, config_dir, name)  # noqa: E731
        raise ConfigError(explain(error, overrides, retry, config_dir)) from None


def group_options(group: str, config_dir: str | None = None) -> list[str]:
    """The config options of ``group`` in the launcher's folder and ``config_dir`` (sorted)."""
    from hydra.core.global_hydra import GlobalHydra

    with hydra_search_path(config_dir):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def _compose(overrides: list[str], config_dir: str | None, name: str) -> Any:
    from hydra import compose as hydra_compose
    from omegaconf import OmegaConf

    with hydra_search_path(config_dir):
        cfg = hydra_compose(name, overrides=overrides, return_hydra_config=True)
    for key in cfg:  # interpolation errors surface here (hydra's own node is Hydra's)
        value = cfg[key] if key != "hydra" else None
        if OmegaConf.is_config(value):
            OmegaConf.to_container(value, resolve=True)
    return cfg


def resolved(cfg: Any) -> Any:
    """``cfg`` resolved, as an OmegaConf config that reads back the same values when saved,
    loaded or created again: a ``${`` in a value (a script's argument ``${HOME}``) is escaped,
    so it stays text instead of becoming an interpolation.

    Example::

        OmegaConf.save(resolved(cfg), "config.yaml")   # OmegaConf.load gives the same values
    """
    from omegaconf import OmegaConf

    return OmegaConf.create(literal(OmegaConf.to_container(cfg, resolve=True)))


def literal(value: Any) -> Any:
    """Plain data with every string's ``${`` escaped (its backslashes before it doubled)."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        doubled = re.sub(r"(\\+)(?=\$\{)", lambda m: m.group(1) * 2, value)
        return doubled.replace("${", "\\${")
    if isinstance(value, dict):
        return {key: literal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [literal(item) for item in value]
    return value


def job_config(cfg: Any) -> dict[str, Any]:
    """The job's part of a composed config (without ``hydra``), resolved, as plain data."""
    from omegaconf import OmegaConf

    return {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in ((k, cfg[k]) for k in cfg if k != "hydra")
    }
