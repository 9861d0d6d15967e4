"""The one error type of bad input: the launcher prints it on one line and exits 2."""


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and what is accepted."""
