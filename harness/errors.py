"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""


class BenchError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""


class DatasetError(BenchError):
    """A dataset folder, label file or image is missing or malformed; the message says where."""


class LabelProtocolError(BenchError, ValueError):
    """A ``--labels`` value that is not ``10%``, ``4000`` or ``25/class``."""


class ConfigError(BenchError):
    """A configuration value or override that cannot be used."""
