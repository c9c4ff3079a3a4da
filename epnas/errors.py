"""Exceptions shared by the whole package.

Every error a user can cause (bad config, bad genome, missing data) derives from
:class:`EpnasError` so the CLI can print one clear line and exit with status 2.
"""

from __future__ import annotations


class EpnasError(Exception):
    """An error caused by user input; the CLI prints its message without a traceback."""


class GenomeError(EpnasError, ValueError):
    """A genome (or genome JSON) is invalid; the message names the offending field."""


class ActionError(GenomeError):
    """An action is illegal for the genome it is applied to."""


class SpaceError(EpnasError, ValueError):
    """A space name, a ``module:Class`` spec or a space option is invalid."""


def validation_message(owner: str, exc: Exception) -> str:
    """One line for a pydantic ``ValidationError``: ``owner: field: problem; ...``."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return f"{owner}: {exc}"
    parts = []
    for err in errors():
        where = ".".join(str(p) for p in err["loc"])  # empty for a whole-model check
        problem = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {problem}" if where else problem)
    return f"{owner}: " + "; ".join(parts)
