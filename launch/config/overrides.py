"""One-line errors for overrides that Hydra would reject with a long message.

Runs on the command line's ``key=value`` strings before Hydra composes the
config: a misspelt key of a fixed group (``dist.nproc=2``) is named with the
accepted keys, a value that cannot have its key's type (``dist.nnodes=two``)
with the type expected.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from launch.config.errors import ConfigError
from launch.config.messages import unknown_key
from launch.config.schema import TARGET_GROUPS

_PARSERS = {"int": int, "float": float}


def check_override_keys(overrides: list[str], schema: dict[str, Any]) -> None:
    """Name the accepted keys when an override names an unknown one (``dist.nproc=2``).

    ``schema`` maps a group (``dist``) to its dataclass. Keys added with
    ``+`` are checked after composition (:func:`launch.config.checks.check_keys`),
    keys of the ``_target_`` groups while composing
    (:func:`launch.config.compose.compose`). A group cannot be deleted
    (``~trainer``): its defaults would come back unsaid.
    """
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith("~"):
            _check_deletion(key[1:], schema)
        if "=" not in override or key.startswith(("+", "~", "hydra.", "-")) or "." not in key:
            continue
        group, name = key.split(".", 1)
        fields = schema.get(group)
        if fields is None:
            continue
        types = {f.name: str(f.type) for f in dataclasses.fields(fields)}
        value = override.split("=", 1)[1]
        first, dot, rest = name.partition(".")
        if first not in types:
            raise unknown_key(
                f"{group}.{first}", value, list(types), group, rest=dot + rest, nested=False
            )
        for one in _sweep_values(value):
            _check_type(key, one, types[name])


def _check_deletion(key: str, schema: dict[str, Any]) -> None:
    """``~group`` and ``~fixed_group.key`` are refused; ``~model.hidden`` (an argument) is not."""
    group = key.split(".")[0]
    if key in (*schema, *TARGET_GROUPS):
        what = "set its keys instead" if key in schema else f"choose another: {key}=<option>"
        raise ConfigError(f"~{key}: the {key} group cannot be removed ({what})")
    if group in schema:
        raise ConfigError(
            f"~{key}: keys of {group} cannot be removed (each has a default): set it instead"
        )


def _sweep_values(value: str) -> list[str]:
    """``a,b`` (a multirun sweep) is checked value by value; anything fancier by Hydra."""
    if "(" in value or "[" in value or "{" in value:
        return [value]
    return value.split(",")


def _check_type(key: str, value: str, type_name: str) -> None:
    """A one-line error for a value that cannot have the key's type (Hydra's is longer)."""
    optional = type_name.startswith("Optional[")
    base = type_name.removeprefix("Optional[").removesuffix("]")
    if optional and value in ("null", "None"):
        return
    if base == "bool":
        if value.lower() not in ("true", "false"):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return
    parse = _PARSERS.get(base)
    if parse is None:
        return
    try:
        parse(value)
    except ValueError:
        what = "an int" if base == "int" else "a number"
        raise ConfigError(
            f"{key}={value!r}: expected {what}{' or null' if optional else ''}"
        ) from None
