"""Loggers whose records carry the global rank; rank 0 prints, every rank may write a file."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from distengine.distributed import get_rank

FORMAT = "%(asctime)s [rank %(rank)d] %(name)s %(levelname)s: %(message)s"


class _RankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


def setup_logger(
    name: str = "distengine",
    level: int = logging.INFO,
    filepath: str | os.PathLike | None = None,
    all_ranks_to_console: bool = False,
    stream: TextIO | None = None,
    fmt: str = FORMAT,
    *,
    format: str | None = None,
    distributed_rank: int | None = None,
    reset: bool = True,
    encoding: str | None = "utf-8",
) -> logging.Logger:
    """A logger that tags records with the rank; by default only rank 0 prints.

    ``filepath`` may contain ``{rank}`` to give each rank its own file
    (every rank writes its file; without ``{rank}`` only rank 0 does).
    PyTorch-Ignite's keywords work too: ``format`` (as ``fmt``),
    ``distributed_rank`` (the rank to act as), ``reset=False`` (an existing
    logger with handlers is returned unchanged; by default it is set up
    again) and ``encoding`` (of the file).

    Example::

        logger = setup_logger("train", filepath="runs/exp1/rank{rank}.log")
        logger.info("epoch %d done", 3)
    """
    rank = get_rank() if distributed_rank is None else distributed_rank
    fmt = fmt if format is None else format
    logger = logging.getLogger(name)
    if not reset and logger.handlers:
        return logger
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(fmt)
    rank_filter = _RankFilter(rank)
    if rank == 0 or all_ranks_to_console:
        console = logging.StreamHandler(stream or sys.stdout)
        console.setFormatter(formatter)
        console.addFilter(rank_filter)
        logger.addHandler(console)
    if filepath is not None and (rank == 0 or "{rank}" in str(filepath)):
        path = str(filepath).format(rank=rank)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        file_handler = logging.FileHandler(path, encoding=encoding)
        file_handler.setFormatter(formatter)
        file_handler.addFilter(rank_filter)
        logger.addHandler(file_handler)
    return logger
