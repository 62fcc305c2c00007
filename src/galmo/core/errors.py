"""The one error type users see: a message naming the file and the problem, no traceback."""

from __future__ import annotations


class GalmoError(Exception):
    """An error caused by the user's input or environment, reported as one clear message.

    The CLI prints ``galmo: error: <message>`` and exits with status 2. Always name the file
    (or the option) and say what is wrong and, where possible, what to do.
    """

    def __init__(self, message: str, path: str | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class BadInput(GalmoError):
    """One input item (a file, an image, a row) is unreadable or invalid.

    With ``--on-error skip`` such items are skipped and listed in ``rejected.csv``; otherwise the
    command stops with the message.
    """


class TrainingInterrupted(Exception):
    """Raised by the training loop when it stopped early (a signal, Ctrl-C, a step limit) after saving a
    resumable checkpoint; the CLI says so and exits 130 (``--resume`` continues)."""
