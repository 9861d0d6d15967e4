"""Exceptions users catch, importable where PyTorch-Ignite users look for them.

Example::

    from distengine.exceptions import NotComputableError

    try:
        value = metric.compute()
    except NotComputableError:
        value = None        # the metric saw no data on any rank
"""

from __future__ import annotations

__all__ = ["NotComputableError"]


class NotComputableError(RuntimeError):
    """A metric was computed before it saw any data (on any rank).

    The same class as ``distengine.metrics.NotComputableError``.
    """
