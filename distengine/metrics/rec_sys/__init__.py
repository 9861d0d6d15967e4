"""Recommender metrics of PyTorch-Ignite's ``ignite.metrics.rec_sys``: ``HitRate`` (``NDCG`` is
not provided).

Example::

    from distengine.metrics.rec_sys import HitRate

    HitRate(top_k=[1, 5]).attach(evaluator, "hitrate")
"""

from distengine.metrics.rec_sys.hitrate import HitRate

__all__ = ["HitRate"]
