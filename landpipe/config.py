"""Settings: where landpipe keeps its state and which database it uses.

Built once by the command or the flow that needs them and passed down; never read at import.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """landpipe's settings, read from ``LANDPIPE_*`` environment variables.

    Attributes
    ----------
    home
        Folder of all local state (the embedded PostgreSQL cluster, Prefect's home, reports).
        A second ``LANDPIPE_HOME`` is a second, independent installation.
    database_url
        SQLAlchemy URL of a production PostGIS. Unset: landpipe runs its own embedded cluster
        under ``home``.
    pg_bindir
        Folder of PostgreSQL's server programs (``initdb``, ``pg_ctl``); found automatically.
    """

    model_config = SettingsConfigDict(env_prefix="LANDPIPE_", extra="ignore")

    home: Path = Path(".landpipe")
    database_url: str | None = None
    pg_bindir: Path | None = None

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        return home.expanduser().resolve()

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, url: str | None) -> str | None:
        """Accept ``postgres://`` and ``postgresql://`` URLs and use the psycopg 3 driver."""
        if not url:
            return None
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url
