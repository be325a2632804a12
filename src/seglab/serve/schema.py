"""The service database's schema version, moved forward by Alembic migrations
(``serve/migrations``; ``seglab db upgrade``).

The embedded SQLite file is upgraded when the service opens it (one file, one host).
Any other database (PostgreSQL shared by replicas) is upgraded only on request, so
that two replicas starting at once never race on a migration: a replica refuses to
start on an older schema and says which command brings it forward.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from seglab.errors import SeglabError

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaError(SeglabError):
    """The database's schema is not the one this seglab needs."""


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head() or ""


def current(engine: Engine) -> str | None:
    """The database's revision; ``None`` for an empty or pre-migration database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, target: str = "head") -> tuple[str | None, str | None]:
    """Bring the database to ``target``; returns (revision before, revision after)."""
    before = current(engine)
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)
    return before, current(engine)


def prepare(engine: Engine, *, migrate: bool) -> None:
    """Make sure the schema is the newest: upgrade it (``migrate``) or refuse."""
    now = current(engine)
    if now == head():
        return
    if migrate:
        upgrade(engine)
        return
    raise SchemaError(f"the database is at schema revision {now or 'none'}; this seglab needs "
                      f"{head()}: run `seglab db upgrade --db URL` once (with every replica "
                      "stopped or on the new version)")
