"""Checks of the default recipe's values that need torch or the number of ranks.

The optimizer is built once, here, on a one-element parameter, exactly as
the recipe builds it (``instantiate(cfg.optim)(params)``): every value torch
refuses (``optim.lr=-1``, ``+optim.betas=[0.9]``, ``optim.momentum=-1``) is
refused before any rank starts, in torch's own words, and the key is found by
building it again with one given value at a time. The global batch must be
shared evenly by the ranks (see :func:`distengine.distributed.auto_dataloader`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from launch.config.errors import ConfigError
from launch.config.messages import typed
from launch.config.nodes import max_nodes, node_range
from launch.config.targets import HYDRA_KEYS

#: What an optimizer's constructor raises for a value it refuses.
REFUSALS = (ValueError, TypeError, IndexError, KeyError)


def uses_recipe(job: Mapping[str, Any]) -> bool:
    """Whether the ranks run the default recipe (no script, no entrypoint)."""
    return job["task"]["script"] is None and job["task"]["entrypoint"] is None


def check_optimizer(node: Mapping[str, Any]) -> None:
    """Build ``optim`` as the recipe does, on one parameter; a ConfigError naming what it refuses.

    Example::

        check_optimizer({"_target_": "torch.optim.Adam", "_partial_": True, "lr": -1})
        # ConfigError: optim.lr=-1: torch.optim.Adam refuses it (Invalid learning rate: -1)
    """
    target = node["_target_"]
    given = {k: v for k, v in node.items() if k not in HYDRA_KEYS}
    for key, value in given.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"optim.{key}={value}: expected a finite number")
    error = _build(node)
    if error is None:
        return
    bare = _build(_bare(node))
    if bare is not None:
        raise ConfigError(
            f"optim: {target} cannot be built as the recipe builds it, "
            f"instantiate(optim)(model.parameters()) ({_first_line(bare)})"
        )
    for key, value in given.items():  # its defaults build: the value it refuses alone
        alone = _build({**_bare(node), key: value})
        if alone is not None:
            raise ConfigError(
                f"optim.{key}={typed(value)}: {target} refuses it ({_first_line(alone)})"
            )
    shown = ", ".join(f"optim.{k}={typed(v)}" for k, v in given.items())
    raise ConfigError(f"optim: {target} refuses {shown} together ({_first_line(error)})")


def _bare(node: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k in HYDRA_KEYS}


def _build(node: Mapping[str, Any]) -> BaseException | None:
    """What building the optimizer from ``node`` raises (a refusal), or None."""
    import torch
    from hydra.utils import instantiate

    try:
        with warnings.catch_warnings():  # a deprecation said here would say it twice
            warnings.simplefilter("ignore")
            made = instantiate(dict(node))
            made([torch.nn.Parameter(torch.zeros(1))])
    except REFUSALS as error:
        return error
    except Exception as error:  # Hydra wraps the constructor's error
        cause = error.__cause__
        return cause if isinstance(cause, REFUSALS) else None
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def fitted_auto_ranks(job: Mapping[str, Any], counted: int) -> int | None:
    """Ranks per node for ``dist.nproc_per_node=auto`` when the ``counted`` ones (torchrun's
    rule: a GPU or a core each) cannot share the recipe's global batch: the most, up to
    ``counted``, that can. None when ``counted`` can, when none can, or when nothing applies
    (a script, an entrypoint, a given number).

    Example::

        fitted_auto_ranks(job, 12)   # data.batch_size=64 on one node: 8
    """
    dist = job["dist"]
    batch = (job["data"] or {}).get("batch_size")
    if not uses_recipe(job) or dist["nproc_per_node"] != "auto":
        return None
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        return None
    low, high = node_range(dist["nnodes"])

    def fits(n: int) -> bool:  # on every number of nodes an elastic range allows
        return all(batch % (n * nodes) == 0 for nodes in range(low, high + 1))

    if fits(counted):
        return None
    return next((n for n in range(counted - 1, 0, -1) if fits(n)), None)


#: The recipe's models that read the digits' 64 features only (not ``data.image=true``).
FEATURE_MODELS = ("launch.recipe.models.mlp",)


def check_model_input(job: Mapping[str, Any]) -> None:
    """``data.image=true`` only with a model that reads images (a ConfigError otherwise).

    Example::

        check_model_input(job)   # model=mlp data.image=true
        # ConfigError: data.image=true: model=mlp (launch.recipe.models.mlp) reads the 64
        # features, not (1, 8, 8) images: use data.image=false, or model=cnn or model=transformer
    """
    model, data = job["model"] or {}, job["data"] or {}
    target = str(model.get("_target_"))
    if data.get("image") is True and target in FEATURE_MODELS:
        name = target.rsplit(".", 1)[-1]
        raise ConfigError(
            f"data.image=true: model={name} ({target}) reads the 64 features, not (1, 8, 8) "
            "images: use data.image=false, or model=cnn or model=transformer"
        )


def check_global_batch(job: Mapping[str, Any], world: int) -> None:
    """``data.batch_size`` (the global batch) shared evenly by the job's ``world`` ranks.

    Example::

        check_global_batch(job, 3)   # data.batch_size=64
        # ConfigError: data.batch_size=64 (the global batch) cannot be split evenly among
        # 3 ranks (21 each, 63 in all): use a multiple of 3 (63 or 66), or a number of
        # ranks that divides 64 (1, 2, 4, 8, 16, 32, 64)
    """
    from distengine.distributed.shards import global_batch_problem

    batch = (job["data"] or {}).get("batch_size")
    if batch is None:
        raise ConfigError(
            "data.batch_size is missing: the default recipe reads the global batch from it "
            "(add +data.batch_size=64)"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"data.batch_size={batch!r}: expected a positive int")
    problem = global_batch_problem(batch, world)
    if problem:
        dist = job["dist"]
        ranks = f"dist.nproc_per_node={dist['nproc_per_node']}"
        if max_nodes(dist["nnodes"]) > 1:
            ranks += f" x dist.nnodes={dist['nnodes']}"
        raise ConfigError(f"data.batch_size={batch} (the global batch, {ranks}) {problem}")
