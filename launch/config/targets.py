"""Checks of ``_target_`` configs (model, data, optim) against the target's signature.

``optim.lr=abc`` or ``+optim.lrr=0.1`` would otherwise start every rank and
fail inside each of them with a TypeError that never names the key. Here the
target is imported (not called) and each key is matched to a parameter and
each value to the parameter's annotation, or to its default's type where it
has none. Annotations this cannot judge (a custom class) accept anything.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any

from launch.config.errors import ConfigError
from launch.config.messages import typed, unknown_key

#: Hydra's own keys in a ``_target_`` node.
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
_ANY = None  # "cannot judge": every value is accepted
_NAMES = {bool: "true or false", int: "an int", float: "a number", str: "a string"}
_NAMES.update({type(None): "null", list: "a list", dict: "a mapping"})


def load_entrypoint(spec: str) -> Any:
    """The function named by ``package.module:function``, or a ConfigError naming the problem."""
    module_name, _, function_name = str(spec).partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"task.entrypoint={spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"task.entrypoint={spec!r}: cannot import {module_name!r} ({error})"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(
            f"task.entrypoint={spec!r}: {module_name} has no function {function_name!r}"
        )
    return function


def check_target(key: str, node: Mapping[str, Any]) -> None:
    """Every key of ``node`` is a parameter of its ``_target_``, with a value it accepts.

    Example::

        check_target("optim", {"_target_": "torch.optim.Adam", "_partial_": True, "lr": "abc"})
        # ConfigError: optim.lr='abc': expected a number (torch.optim.Adam's lr: float | Tensor)
    """
    path = str(node["_target_"])
    target = _locate(f"{key}._target_", path)
    if not callable(target):
        raise ConfigError(f"{key}._target_={path!r}: not a class or function")
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # a builtin without a signature: Hydra will call it as it is
    params = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    hints = _hints(target)
    for name, value in node.items():
        if name in HYDRA_KEYS:
            continue
        param = params.get(name)
        if param is None or param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
            if takes_any:
                continue
            raise unknown_key(f"{key}.{name}", typed(value), accepted_names(target), path)
        if isinstance(value, Mapping) and "_target_" in value:
            check_target(f"{key}.{name}", value)
            continue
        annotation = hints.get(name, param.annotation)
        _check_value(f"{key}.{name}", value, annotation, param.default, f"{path}'s {name}")
    if not node.get("_partial_", False):
        _check_required(key, path, params, node)
    _check_arguments(target, node)


def accepted_names(target: Any) -> list[str]:
    """The keyword arguments ``target`` takes (what a ``_target_`` node may hold)."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [n for n, p in params.items() if p.kind in kinds and n != "self"]


def locate_target(key: str, node: Any) -> Any:
    """The class or function a ``_target_`` node names (None when it names none or fails)."""
    if not isinstance(node, Mapping) or "_target_" not in node:
        return None
    try:
        return _locate(f"{key}._target_", str(node["_target_"]))
    except ConfigError:
        return None


def _check_arguments(target: Any, node: Mapping[str, Any]) -> None:
    """Run the target's own ``check_arguments(**values)``, where it has one.

    A ``_target_`` may carry a function that refuses values its signature
    cannot express (a size below 1, heads that do not divide the width) with
    a ValueError naming the key: the launcher refuses them before any rank
    starts, instead of every rank failing while it builds the model.
    """
    check = getattr(target, "check_arguments", None)
    if not callable(check):
        return
    values = {name: value for name, value in node.items() if name not in HYDRA_KEYS}
    try:
        check(**values)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _locate(key: str, path: str) -> Any:
    """Import ``a.b.c``: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            found: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name) and split > 1:
                continue  # not a module: try a shorter prefix
            raise ConfigError(f"{key}={path!r}: cannot import it ({error})") from None
        except Exception as error:
            raise ConfigError(f"{key}={path!r}: importing it raised {error!r}") from None
        for attribute in parts[split:]:
            if not hasattr(found, attribute):
                raise ConfigError(f"{key}={path!r}: {module_name} has no {attribute!r}")
            found = getattr(found, attribute)
        return found
    raise ConfigError(f"{key}={path!r}: cannot import it")


def _hints(target: Any) -> dict[str, Any]:
    """Resolved annotations (``from __future__ import annotations`` leaves strings)."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(function)
    except Exception:  # an annotation that does not resolve: fall back to the raw ones
        return {}


def _check_required(key: str, path: str, params: Mapping[str, Any], node: Mapping) -> None:
    for name, param in params.items():
        required = param.default is param.empty and param.kind in (
            param.POSITIONAL_OR_KEYWORD,
            param.KEYWORD_ONLY,
        )
        if required and name != "self" and name not in node:
            raise ConfigError(f"{key}.{name} is missing: {path} needs it (add +{key}.{name}=...)")


def _check_value(key: str, value: Any, annotation: Any, default: Any, where: str) -> None:
    kinds = _kinds(annotation) if annotation is not inspect.Parameter.empty else _ANY
    if kinds is _ANY and default is not inspect.Parameter.empty and default is not None:
        kinds = _kinds(type(default))
    if kinds is _ANY or _fits(value, kinds):
        return
    names = sorted({_NAMES.get(k, k.__name__) for k in kinds if k is not float or int in kinds})
    if float in kinds:
        names = sorted({n for n in names if n != "an int"} | {"a number"})
    shown = _annotation_text(annotation, default)
    raise ConfigError(f"{key}={value!r}: expected {' or '.join(names)} ({where}: {shown})")


def _fits(value: Any, kinds: set[type]) -> bool:
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    if isinstance(value, (list, tuple)):
        return list in kinds
    if isinstance(value, Mapping):
        return dict in kinds
    return type(value) in kinds


def _kinds(annotation: Any) -> set[type] | None:
    """The YAML value types an annotation accepts, or None when it cannot be judged."""
    if annotation is typing.Any or isinstance(annotation, (str, typing.TypeVar)):
        return _ANY
    if annotation in (None, type(None)):
        return {type(None)}
    if annotation in (bool, int, float, str):
        return {annotation} | ({int} if annotation is float else set())
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        found: set[type] = set()
        for part in typing.get_args(annotation):
            kinds = _kinds(part)
            if kinds is _ANY:
                return _ANY
            found |= kinds
        return found
    if origin is typing.Literal:
        return _ANY
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple):
        return {list}
    if origin in (dict,) or annotation is dict:
        return {dict}
    if _is_tensor(annotation):
        return set()  # no YAML value is a tensor; a union with float still accepts numbers
    return _ANY


def _is_tensor(annotation: Any) -> bool:
    return getattr(annotation, "__module__", "").startswith("torch") and (
        getattr(annotation, "__name__", "") == "Tensor"
    )


def _annotation_text(annotation: Any, default: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return f"default {default!r}"
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return text.replace("torch.Tensor", "Tensor")
