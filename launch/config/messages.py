"""One style for every refused key or value: ``KEY=VALUE: what is wrong; what is accepted``.

Each message is one line that names the override as typed (or the value the
config composed), says what is wrong and what would be accepted, and ends
with the nearest accepted key or value, written as an override to type,
when there is one close enough (:func:`difflib.get_close_matches`).

Example::

    unknown_key("model.hiden", "64", ["in_features", "hidden", "num_classes"], "model")
    # model.hiden=64: unknown key; model accepts in_features, hidden, num_classes;
    # did you mean model.hidden=64?
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from launch.config.errors import ConfigError


def nearest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``name`` (a typo or a shortening of it), or None.

    Example::

        nearest("hiden", ["in_features", "hidden"])            # 'hidden'
        nearest("nproc", ["nproc_per_node", "nnodes"])         # 'nproc_per_node'
    """
    known = [str(k) for k in known]
    found = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    if found:
        return found[0]
    longer = [k for k in known if name and k.startswith(str(name))]
    return longer[0] if len(longer) == 1 else None


def typed(value: Any) -> str:
    """A composed value as an override would write it (``true``, ``null``, ``[0.9,2]``)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(typed(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{typed(v)}" for k, v in value.items()) + "}"
    return str(value)


def suggestion(override: str | None) -> str:
    """``; did you mean OVERRIDE?`` (empty without one)."""
    return f"; did you mean {override}?" if override else ""


def unknown_key(
    key: str,
    value: object,
    known: list[str],
    owner: str,
    present: list[str] | None = None,
    rest: str = "",
    nested: bool = True,
) -> ConfigError:
    """``key=value`` names a key that ``owner`` (a group, a ``_target_``, ``the config``) lacks.

    ``known``: what ``owner`` accepts (the last part of ``key`` is matched
    against them); ``present``: those the config holds already (a nearest
    key outside them is suggested with ``+``; default: all of ``known``);
    ``rest``: the part of the override's key after ``key`` (``traner.max_epochs``:
    the unknown key is ``traner``, the rest ``.max_epochs``); ``nested``: whether
    the nearest key can hold that rest (a group can, a number cannot: no suggestion).
    """
    parent, _, name = key.rpartition(".")
    prefix = f"{parent}." if parent else ""
    typed_value = f"={value}" if value is not None else ""
    close = nearest(name, known) if nested or not rest else None
    hint = None
    if close is not None:
        plus = "+" if close not in (known if present is None else present) else ""
        hint = f"{plus}{prefix}{close}{rest}{typed_value}"
    return ConfigError(
        f"{key}{rest}{typed_value}: unknown key; {owner} accepts {', '.join(known)}"
        f"{suggestion(hint)}"
    )


def bad_value(
    key: str, value: object, accepted: str, choices: Iterable[str | None] = ()
) -> ConfigError:
    """``key=value`` is outside what the key accepts; ``choices``: the values it takes, if few."""
    named = [c for c in choices if isinstance(c, str)]
    close = nearest(value, named) if isinstance(value, str) else None
    hint = f"{key}={close}" if close is not None else None
    return ConfigError(f"{key}={value!r}: expected {accepted}{suggestion(hint)}")
