"""``seglab users ...`` and ``seglab keys ...``: who may use the web service, in the same
database as ``seglab serve`` (``--data-dir`` or ``--db``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from seglab.cli.app import _friendly, app

users = typer.Typer(no_args_is_help=True, help="Web service users and their roles.")
keys = typer.Typer(no_args_is_help=True, help="API keys for the web service's JSON API.")
app.add_typer(users, name="users")
app.add_typer(keys, name="keys")

DataDir = Annotated[Path, typer.Option(help="The service's --data-dir.")]
Db = Annotated[str | None, typer.Option(help="The service's --db URL (default: SQLite in "
                                             "--data-dir).")]


def _accounts(data_dir: Path, db: str | None):  # noqa: ANN202 (lazy import)
    from seglab.serve.auth import Accounts
    from seglab.serve.store import Store

    return Accounts(Store(data_dir, db))


@users.command("add")
@_friendly
def users_add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")],
    role: Annotated[str, typer.Option(help="viewer, operator, reviewer or admin.")] = "viewer",
    password_stdin: Annotated[bool, typer.Option(
        help="Read the password from stdin (scripts); else it is asked for, twice.")] = False,
    no_password: Annotated[bool, typer.Option(
        help="No sign-in for the pages: this user only uses API keys.")] = False,
    data_dir: DataDir = Path("seglab-data"), db: Db = None,
) -> None:
    """Add a user with a role; a password lets them sign in to the pages."""
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not no_password:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    user = _accounts(data_dir, db).add_user(name, role, password)
    typer.echo(f"added {user.name} ({user.role})")


@users.command("list")
@_friendly
def users_list(data_dir: DataDir = Path("seglab-data"), db: Db = None) -> None:
    """Every user, their role and whether they can sign in."""
    for u in _accounts(data_dir, db).users():
        state = "disabled" if u.disabled else ("password" if u.password else "keys only")
        typer.echo(f"{u.name:24s} {u.role:9s} {state}")


@users.command("role")
@_friendly
def users_role(name: str, role: str, data_dir: DataDir = Path("seglab-data"),
               db: Db = None) -> None:
    """Change a user's role."""
    _accounts(data_dir, db).set_role(name, role)
    typer.echo(f"{name} is now {role}")


@users.command("disable")
@_friendly
def users_disable(name: str, data_dir: DataDir = Path("seglab-data"), db: Db = None) -> None:
    """Disable a user: their keys and sessions stop working at once."""
    _accounts(data_dir, db).disable(name)
    typer.echo(f"disabled {name}")


@keys.command("create")
@_friendly
def keys_create(user: Annotated[str, typer.Argument(help="Whose key (seglab users list).")],
                data_dir: DataDir = Path("seglab-data"), db: Db = None) -> None:
    """A new API key for a user, printed once: only its hash is kept."""
    key_id, key = _accounts(data_dir, db).create_key(user)
    typer.echo(key)
    typer.echo(f"key {key_id} for {user}; shown once, store it now "
               "(send it as Authorization: Bearer KEY)", err=True)


@keys.command("list")
@_friendly
def keys_list(data_dir: DataDir = Path("seglab-data"), db: Db = None) -> None:
    """Every key's id, user, creation, last use and revocation (never the key itself)."""
    for k in _accounts(data_dir, db).api_keys():
        typer.echo(f"{k.id}  {k.user:24s} created {k.created:%Y-%m-%d %H:%M}  "
                   f"last used {k.last_used.strftime('%Y-%m-%d %H:%M') if k.last_used else '-'}"
                   f"{'  REVOKED' if k.revoked else ''}")


@keys.command("revoke")
@_friendly
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (or the key).")],
                data_dir: DataDir = Path("seglab-data"), db: Db = None) -> None:
    """Revoke a key; requests with it get 401 from then on."""
    _accounts(data_dir, db).revoke(key_id)
    typer.echo(f"revoked {key_id.removeprefix('sk_').split('_')[0]}")
