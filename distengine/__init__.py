"""distengine: an event-driven, rank-aware training engine for PyTorch.

Import the parts you use::

    from distengine.engine import Engine, Events
    import distengine.distributed as idist
"""

__version__ = "0.1.0"
