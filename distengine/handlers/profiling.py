"""What the time profilers share: engine checks, handler records they install, output."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distengine.distributed.env import get_rank
from distengine.engine import Engine, EventEnum
from distengine.engine.handlers import HandlerRecord, handler_lists


def check_engine(engine: Any) -> None:
    if not isinstance(engine, Engine):
        raise TypeError(
            f"Argument engine should be distengine.engine.Engine, but given {type(engine).__name__}"
        )


def handler_name(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", type(handler).__name__)


def write_csv(path: str | Path, headers: list[str], columns: list[torch.Tensor]) -> None:
    """Rows of ``columns`` (one tensor each) under ``headers``, on rank 0 only."""
    if get_rank() != 0:
        return
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(headers)
        writer.writerows(torch.stack(columns, dim=1).tolist())


def say(text: str) -> str:
    if get_rank() == 0:
        print(text)
    return text


class Installed:
    """Records a profiler put into an engine's handler lists, to take them out again."""

    def __init__(self) -> None:
        self.records: list[tuple[EventEnum, HandlerRecord]] = []

    def add(self, engine: Engine, event: EventEnum, fn: Callable[[], None], first: bool) -> None:
        record = HandlerRecord(fn, (), {}, False, None)
        records = handler_lists(engine)[event]
        records.insert(0, record) if first else records.append(record)
        self.records.append((event, record))

    def remove(self, engine: Engine) -> None:
        lists = handler_lists(engine)
        for event, record in self.records:
            if record in lists.get(event, []):
                lists[event].remove(record)
        self.records = []


def fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return f"{value[0]:.5f}/{value[1]}"
    return f"{float(value):.5f}"
