"""The errors landpipe reports to a user, and the one table that maps them to exit codes.

Every error a user can cause with their input derives from :class:`LandpipeError` and carries
a one-line message that says what is wrong and where. The CLI prints that line, never a
traceback, and exits with the code of :data:`EXIT_CODES`.
"""

from __future__ import annotations


class LandpipeError(Exception):
    """Base of every error landpipe reports to a user."""


class ConfigError(LandpipeError):
    """The settings or the environment cannot work (no PostgreSQL, bad URL, bad option)."""


class DatabaseError(LandpipeError):
    """The database cannot be reached, started or upgraded."""

    @classmethod
    def of(cls, doing: str, err: Exception) -> DatabaseError:
        """``doing: reason``, the reason the first line of what the driver said in ``err`` (a
        SQLAlchemy ``DBAPIError``, or the driver's own error)."""
        said = str(getattr(err, "orig", None) or err).strip()
        return cls(f"{doing}: {said.splitlines()[0] if said else type(err).__name__}")


class DeliveryError(LandpipeError):
    """A delivery that cannot be used as a whole: nothing of it is loaded."""


class SourceError(DeliveryError):
    """The delivery cannot be opened or read (missing, truncated, not what its name says)."""


class LayerError(DeliveryError):
    """No parcel layer in the delivery, or the parcel layer holds no parcels."""


class CRSError(DeliveryError):
    """The delivery's coordinate reference system is unknown, unusable or contradicts the data."""


class FieldError(DeliveryError):
    """The delivery lacks a field that every parcel needs and no option supplies it."""


class SupersededError(DeliveryError):
    """A file loaded before, read otherwise now, whose sheets a newer delivery changed since:
    loading it would undo that delivery (``landpipe load --force`` does so anyway)."""


#: Exit code per error kind; the most specific class listed wins. 0 is success, 1 an
#: unexpected failure (a bug), 2 a usage error (typer's own).
EXIT_CODES: dict[type[LandpipeError], int] = {
    ConfigError: 3,
    DatabaseError: 4,
    SourceError: 10,
    LayerError: 11,
    CRSError: 12,
    FieldError: 13,
    SupersededError: 15,
    DeliveryError: 14,
    LandpipeError: 1,
}


def exit_code_of(kind_name: str | None) -> int:
    """Exit code for an error kind given by class name (as in ``landpipe load --json``)."""
    for kind, code in EXIT_CODES.items():
        if kind.__name__ == kind_name:
            return code
    return 1


def exit_code(error: LandpipeError) -> int:
    """Return the exit code for ``error``, from the most specific class in :data:`EXIT_CODES`."""
    for kind in type(error).__mro__:
        if kind in EXIT_CODES:
            return EXIT_CODES[kind]
    return 1
