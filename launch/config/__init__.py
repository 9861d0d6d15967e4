"""The launcher's config: its schema, and every check that runs before a rank starts."""

from launch.config.errors import ConfigError

__all__ = ["ConfigError"]
