"""The small exception tree every layer raises; the API and CLI map it to answers."""

from __future__ import annotations


class CtripdError(Exception):
    """Base of every error ctripd raises on purpose."""


class DatabaseError(CtripdError):
    """The database could not be reached or refused a statement."""


class NotFoundError(CtripdError):
    """The row asked for does not exist (or is not visible to the caller)."""
