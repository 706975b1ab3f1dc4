"""The errors a stage reports as one paragraph and a non-zero exit, without a traceback."""


class StageError(RuntimeError):
    """A failure the user can fix; the message names the culprit (file, line, field or config key)."""


class ConfigError(ValueError):
    """A config that cannot be composed or does not fit the schema. Names the key."""
