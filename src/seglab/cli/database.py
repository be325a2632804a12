"""``seglab db ...``: the service database's schema (Alembic migrations)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seglab.cli.app import _friendly, app

db = typer.Typer(no_args_is_help=True, help="The web service's database schema.")
app.add_typer(db, name="db")

DataDir = Annotated[Path, typer.Option(help="The service's --data-dir.")]
Url = Annotated[str | None, typer.Option("--db", help="The service's --db URL (default: "
                                                      "SQLite in --data-dir).")]


def _engine(data_dir: Path, url: str | None):  # noqa: ANN202 (lazy import)
    from seglab.serve.store import create_database_engine, database_url

    if not url:
        data_dir.mkdir(parents=True, exist_ok=True)
    return create_database_engine(database_url(data_dir, url))


@db.command("upgrade")
@_friendly
def upgrade(data_dir: DataDir = Path("seglab-data"), url: Url = None) -> None:
    """Bring the database to this seglab's schema, in place, keeping every row."""
    from seglab.serve import schema

    before, after = schema.upgrade(_engine(data_dir, url))
    typer.echo(f"schema {before or 'none'} -> {after}" if before != after
               else f"schema already at {after}")


@db.command("current")
@_friendly
def current(data_dir: DataDir = Path("seglab-data"), url: Url = None) -> None:
    """The database's schema revision and the one this seglab needs."""
    from seglab.serve import schema

    typer.echo(f"database at {schema.current(_engine(data_dir, url)) or 'none'}; "
               f"this seglab needs {schema.head()}")
