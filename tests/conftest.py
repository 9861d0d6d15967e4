"""Shared fixtures: pools of real gloo ranks (started once per session and reused), the ``gpu``
marker (skipped without CUDA) and ``cpu_only`` (a test that means the CPU on any machine)."""

from __future__ import annotations

import pytest
import torch

from tests.multirank import RankPool


def pytest_addoption(parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: minutes on 2 cores; run with --slow")


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``gpu`` need a CUDA device, tests marked ``slow`` need ``--slow``: each is
    skipped, with the reason, where that is missing."""
    cuda, slow = torch.cuda.is_available(), config.getoption("--slow")
    no_gpu = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
    not_slow = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(no_gpu)
        if "slow" in item.keywords and not slow:
            item.add_marker(not_slow)
    items.sort(key=lambda item: not _starts_processes(item))  # stable: the long ones first


#: Tests that start launchers or interpreters (seconds to a minute each). Run first, so that
#: ``make test``'s workers end together on the short ones instead of one waiting on the other.
LONG = (
    "tests/launcher/",
    "tests/ignite_compat/test_ignite_examples.py",
    "tests/test_docs.py",
    "tests/test_packaging.py",
)


def _starts_processes(item) -> bool:
    return item.nodeid.startswith(LONG)


@pytest.fixture
def cpu_only(monkeypatch):
    """Hide CUDA from this process for one test: ``idist.device()`` is the CPU, as the test means.

    For tests whose code picks the device itself (``auto_model``, ``DataParallel``); on a
    machine without CUDA it changes nothing.
    """
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


class Pools:
    """One :class:`RankPool` per world size, replaced when a test breaks it."""

    def __init__(self) -> None:
        self._pools: dict[int, RankPool] = {}

    def get(self, world_size: int) -> RankPool:
        pool = self._pools.get(world_size)
        if pool is None or not pool.alive:
            pool = self._pools[world_size] = RankPool(world_size)
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()


@pytest.fixture(scope="session")
def pools():
    pools = Pools()
    yield pools
    pools.close()


@pytest.fixture
def ranks2(pools) -> RankPool:
    """Two gloo ranks: ``ranks2.run(fn, *args)`` runs ``fn`` on both."""
    return pools.get(2)


@pytest.fixture
def ranks3(pools) -> RankPool:
    """Three gloo ranks."""
    return pools.get(3)


@pytest.fixture(params=[2, 3], ids=["2ranks", "3ranks"])
def ranks(request, pools) -> RankPool:
    """Two, then three gloo ranks."""
    return pools.get(request.param)
