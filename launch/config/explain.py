"""One line for each error Hydra, OmegaConf and YAML raise while composing the config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from launch.config.command_line import config_folder


def explain(
    error: BaseException,
    overrides: list[str] | tuple[str, ...] = (),
    retry: Callable[[list[str]], Any] | None = None,
    config_dir: str | None = None,
) -> str:
    """One line for the errors Hydra, OmegaConf and YAML raise while composing.

    An override of a key the config does not have is said in the launcher's
    style (:mod:`launch.config.messages`): ``retry`` composes the config
    without it, to name the keys accepted there and the nearest one.
    Hydra's own hints (``add --multirun``) are kept, on the same line.
    """
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if isinstance(error, OverrideParseException):
        hint = ""
        if str(error.override).startswith("task.args="):
            hint = (
                "; a script's arguments can also follow --, as typed: python -m launch "
                "task.script=main.py -- run --backend=gloo"
            )
        return f"cannot parse the override {error.override!r}: {first_line(error)}{hint}"
    cause = error.__cause__ or error
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        return _missing(error, config_dir)
    mark = getattr(cause, "problem_mark", None)
    if mark is not None:
        return (
            f"malformed YAML in {mark.name} line {mark.line + 1}, column {mark.column + 1}: "
            f"{getattr(cause, 'problem', '') or first_line(cause)}"
        )
    key = getattr(cause, "full_key", None)
    if key and retry and isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        said = _unknown_override(key, list(overrides), retry)
        if said:
            return said
    if key:
        return f"{key}: {first_line(cause)}"
    said = [_one_line(error)] if str(error) else []
    if cause is not error and str(cause):
        said.append(first_line(cause))
    return ": ".join(said) or type(error).__name__


def _missing(error: Any, config_dir: str | None) -> str:
    """A group option (``model=mpl``) or a primary config (``--config-name``) not found."""
    from launch.config.messages import nearest, suggestion

    group, _, option = str(error.missing_cfg_file).rpartition("/")
    if group:
        options = list(error.options or [])
        close = nearest(option, options)
        hint = suggestion(f"{group}={close}" if close else None)
        accepted = ", ".join(options) or "none"
        return f"{group}={option}: no such option; {group} accepts {accepted}{hint}"
    from launch.config.compose import CONF_DIR

    folders = f"{CONF_DIR} or {config_folder(config_dir)}" if config_dir else CONF_DIR
    return f"--config-name {option}: no config named {option!r} in {folders}"


def _unknown_override(
    key: str, overrides: list[str], retry: Callable[[list[str]], Any]
) -> str | None:
    """The launcher's line for an override of a key the composed config does not have."""
    from omegaconf import OmegaConf

    from launch.config.checks import top_keys
    from launch.config.messages import unknown_key
    from launch.config.targets import HYDRA_KEYS, accepted_names, locate_target

    name_of = lambda o: o.split("=", 1)[0]  # noqa: E731
    found = [o for o in overrides if name_of(o) == key or name_of(o).startswith(f"{key}.")]
    if not found:
        return None
    override = found[0]
    value = override.split("=", 1)[1] if "=" in override else None
    rest = name_of(override)[len(key) :]
    try:
        cfg = retry([o for o in overrides if o is not override])
    except Exception:
        return None
    parent, _, name = key.rpartition(".")
    if not parent:
        return str(unknown_key(key, value, top_keys(), "the config", rest=rest))
    node = OmegaConf.select(cfg, parent)
    if not OmegaConf.is_dict(node):
        return None
    present = [str(k) for k in node if k not in HYDRA_KEYS]
    target = locate_target(parent, node)
    known = accepted_names(target) if target is not None else present
    if name in known and not rest:
        return (
            f"{key}={value}: not in the {parent} config, though {node['_target_']} takes it: "
            f"add it with +{key}={value}"
        )
    owner = str(node["_target_"]) if target is not None else parent
    return str(unknown_key(key, value, known or present, owner, present=present, rest=rest))


def _one_line(error: BaseException) -> str:
    """Hydra's message on one line: its first line, then its hints (OmegaConf's key lines out)."""
    lines = [line.strip() for line in str(error).strip().splitlines()]
    lines = [line for line in lines if line and not line.startswith(_OMEGACONF_DETAILS)]
    if not lines:
        return type(error).__name__
    return lines[0] + (": " + "; ".join(lines[1:]) if len(lines) > 1 else "")


_OMEGACONF_DETAILS = ("full_key:", "object_type=", "reference_type=")


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
