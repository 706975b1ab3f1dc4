"""The error a stage reports as one paragraph and a non-zero exit, without a traceback."""


class StageError(RuntimeError):
    """A failure the user can fix; the message names the culprit (file, line, field or config key)."""
