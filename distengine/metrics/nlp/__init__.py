"""Text metrics of PyTorch-Ignite's ``ignite.metrics.nlp``: the character error rate and the
perplexity (``Bleu`` and ``Rouge`` are not provided).

Example::

    from distengine.metrics.nlp import CharacterErrorRate, Perplexity

    CharacterErrorRate().attach(evaluator, "cer")
"""

from distengine.metrics.nlp.character_error_rate import CharacterErrorRate
from distengine.metrics.nlp.perplexity import Perplexity

__all__ = ["CharacterErrorRate", "Perplexity"]
