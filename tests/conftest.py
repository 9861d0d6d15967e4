"""Shared fixtures: pools of real gloo ranks, started once per session and reused."""

from __future__ import annotations

import pytest

from tests.multirank import RankPool


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
