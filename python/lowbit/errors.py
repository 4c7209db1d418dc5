"""Exceptions that are part of lowbit's interface."""

from __future__ import annotations


class FormatError(ValueError):
    """A .qbin file (or an embedded structure) does not validate.

    The message names the file and what is wrong with it.
    """


class UnsupportedOpError(ValueError):
    """A model uses operators lowbit cannot import.

    ``ops`` maps each unsupported ``domain::op_type`` (or ``op_type`` for the default
    domain) to the list of node names that use it.
    """

    def __init__(self, message: str, ops: dict[str, list[str]] | None = None, opset: int | None = None):
        super().__init__(message)
        self.ops = dict(ops or {})
        self.opset = opset
