"""One-line errors for a whole group or a list key given a value of the wrong kind.

Hydra and OmegaConf refuse ``checkpoint=5``, ``trainer=5``, ``task=[1]`` or
``task.args=5`` with their own words (``Invalid type assigned: int is not a
subclass of CheckpointConfig``, ``Config group override must be a string or a
list. Got int``); these checks say it in the launcher's style before Hydra
composes: the override as typed and what the key accepts.

Example::

    check_group_values(["checkpoint=5"], options_of=lambda group: [])
    # ConfigError: checkpoint=5: expected keys of the checkpoint group
    # (checkpoint.resume=... or checkpoint={resume:...}); checkpoint accepts resume,
    # n_saved, every_iters
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from launch.config.errors import ConfigError
from launch.config.schema import GROUPS


def check_group_values(overrides: list[str], options_of: Callable[[str], list[str]]) -> None:
    """Refuse an override of a group or a list key whose value cannot be what it holds.

    ``options_of(group)``: the group's config options (``model``: ``cnn``,
    ``mlp``, ...; none for ``checkpoint``, whose keys are fixed). A group with
    options takes an option's name, a list of them or a mapping of keys; a
    group without options only a mapping; a list key only a list. A sweep
    (``model=mlp,cnn``) is checked by Hydra and per point.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:
        return  # said by compose, with the override that does not parse
    for line, override in zip(overrides, parsed):
        if override.type != OverrideType.CHANGE or override.package is not None:
            continue
        if override.is_sweep_override():
            continue
        key, value = override.key_or_group, override.value()
        typed = line.split("=", 1)[1]  # as typed (Hydra would write 5 as 5, true as True)
        if key in GROUPS or "." not in key:
            options = options_of(key)
            if options or key in GROUPS:
                _check_group(key, value, typed, options)
        else:
            _check_list_key(key, value, typed)


def _check_group(group: str, value: Any, typed: str, options: list[str]) -> None:
    if isinstance(value, dict):
        return
    if options:
        names = value if isinstance(value, list) else [value]
        if all(isinstance(name, str) for name in names):
            return  # an option Hydra finds, or one it names with the options
        raise ConfigError(f"{group}={typed}: no such option; {group} accepts {', '.join(options)}")
    keys = [f.name for f in dataclasses.fields(GROUPS[group])]
    raise ConfigError(
        f"{group}={typed}: expected keys of the {group} group ({group}.{keys[0]}=... or "
        f"{group}={{{keys[0]}:...}}); {group} accepts {', '.join(keys)}"
    )


def _check_list_key(key: str, value: Any, typed: str) -> None:
    group, _, name = key.partition(".")
    schema = GROUPS.get(group)
    fields = {f.name: str(f.type) for f in dataclasses.fields(schema)} if schema else {}
    if not fields.get(name, "").startswith("list[") or isinstance(value, list):
        return
    after = "; or give the script's arguments after --" if key == "task.args" else ""
    raise ConfigError(f"{key}={typed}: expected a list, such as {key}=[a,b]{after}")
