"""The ``seglab`` application: its options, the error contract and the batch exit codes.

A user mistake (bad file, bad recipe, broken model folder) prints one clear
``error:`` line and exits with status 2, never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from seglab import __version__
from seglab.errors import SeglabError

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="U-Net segmentation for steel defects and jewellery background removal.")


def _friendly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn seglab's user-facing errors into one line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SeglabError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
        except FileNotFoundError as exc:
            typer.secho(f"error: file not found: {exc.filename}", fg="red", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.callback(invoke_without_command=True)
def main(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False
         ) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def _exit_for(errors: list[dict]) -> None:
    """The batch exit contract: 0 when every input was processed, 1 when some were skipped
    (each was named above); user mistakes exit 2 before any work (``check_inputs``)."""
    if errors:
        typer.secho(f"{len(errors)} input(s) skipped: "
                    + ", ".join(Path(e["image"]).name for e in errors), fg="yellow", err=True)
        raise typer.Exit(1)


def _is_model(text: str) -> bool:
    from seglab.models import zoo

    return (Path(text) / "config.json").is_file() or zoo.is_zoo_name(text)
