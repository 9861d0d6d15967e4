"""PyTorch-Ignite's ``GpuInfo``: this rank's GPU memory use (and utilisation) as metrics."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from distengine.distributed import device as rank_device
from distengine.engine import Engine, Events

__all__ = ["GpuInfo"]


class GpuInfo:
    """Puts ``<name>:<gpu> mem(%)`` (and ``<name>:<gpu> util(%)``) into ``engine.state.metrics``.

    It reports the GPU this rank computes on (``idist.device()``): memory in
    use from ``torch.cuda.mem_get_info`` (no extra package), utilisation from
    ``torch.cuda.utilization`` where ``pynvml`` is installed (otherwise only
    memory, with one warning). Nothing is reduced across ranks. Without a GPU
    the constructor raises RuntimeError, as PyTorch-Ignite's does.

    Example::

        try:
            GpuInfo().attach(trainer, name="gpu")     # state.metrics["gpu:0 mem(%)"]
        except RuntimeError:
            print("no GPU: nothing to report")
    """

    def __init__(self) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("GpuInfo needs a CUDA GPU and torch sees none")
        try:
            import pynvml  # noqa: F401
        except ImportError:
            self._with_util = False
            warnings.warn(
                "GpuInfo reports GPU memory only: GPU utilisation needs the pynvml package",
                stacklevel=2,
            )
        else:
            self._with_util = True

    def compute(self) -> list[dict[str, Any]]:
        """``[{"index": i, "memory_used_percent": m, "utilization_percent": u}]`` for this
        rank's GPU (``utilization_percent`` only with pynvml)."""
        dev = rank_device()
        index = dev.index if dev.type == "cuda" and dev.index is not None else 0
        free, total = torch.cuda.mem_get_info(index)
        report: dict[str, Any] = {
            "index": index,
            "memory_used_percent": 100 * (total - free) // total,
        }
        if self._with_util:
            report["utilization_percent"] = int(torch.cuda.utilization(index))
        return [report]

    def completed(self, engine: Engine, name: str) -> None:
        """Write the report into ``engine.state.metrics`` under ``name``."""
        for report in self.compute():
            engine.state.metrics[f"{name}:{report['index']} mem(%)"] = report["memory_used_percent"]
            if "utilization_percent" in report:
                engine.state.metrics[f"{name}:{report['index']} util(%)"] = report[
                    "utilization_percent"
                ]

    def attach(
        self, engine: Engine, name: str = "gpu", event_name: Any = Events.ITERATION_COMPLETED
    ) -> None:
        """Report on ``event_name`` (default: after every iteration)."""
        engine.add_event_handler(event_name, self.completed, name)
