"""An offline stand-in for the parts of torchvision that Ignite's examples use (see README)."""

from torchvision import datasets, models, transforms

__version__ = "0.0+offline"
__all__ = ["datasets", "models", "transforms"]
