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
def root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False
         ) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


# The options --engine ray adds to the batch verbs (predict, cutout).
Engine = Annotated[str, typer.Option(
    help="local (this process, the default) or ray (Ray Data: decoding in tasks, the model "
         "in a pool of actors; pip install 'seglab[ray]').")]
Address = Annotated[str | None, typer.Option(
    help="--engine ray: an existing cluster (ray://host:10001 or auto); default: start Ray "
         "on this machine.")]
RayWorkers = Annotated[int, typer.Option(
    help="--engine ray: model copies (actors), one model load each.", min=1)]
CpusPerWorker = Annotated[float, typer.Option(help="--engine ray: CPUs per actor.", min=0.1)]
GpusPerWorker = Annotated[float, typer.Option(
    help="--engine ray: GPUs per actor (0.5: two actors share one GPU).", min=0.0)]
Parquet = Annotated[bool, typer.Option(
    help="--engine ray: also write the per-image rows as Parquet.")]


def _check_engine(engine: str, inputs: list[str]) -> None:
    """Refuse an unknown engine, and URLs on the local engine, before any work."""
    from seglab.data.images import is_url

    if engine not in ("local", "ray"):
        raise SeglabError(f"--engine must be local or ray, not {engine!r}")
    if engine == "local" and any(is_url(i) for i in inputs):
        raise SeglabError("URL inputs (s3://, gs://, https://...) are read by --engine ray; "
                          "the local engine reads files, folders and globs")


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


def main() -> int:
    """The ``seglab`` entry point: the app, with Click's own usage errors (a missing
    option, a value of the wrong type, an unknown flag) also reported as one ``error:``
    line and status 2, like every other user mistake, instead of a usage panel."""
    try:  # typer >= 0.2x ships its own click as typer._click; older typer uses click
        from typer._click import exceptions as clickx
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions as clickx

    try:
        code = app(standalone_mode=False)
    except clickx.NoArgsIsHelpError as exc:  # bare `seglab VERB`: its help
        exc.show()
        return 2
    except clickx.UsageError as exc:
        hint = f"; see `{exc.ctx.command_path} --help`" if exc.ctx is not None else ""
        typer.secho(f"error: {exc.format_message().rstrip('.')}{hint}", fg="red", err=True)
        return 2
    except clickx.ClickException as exc:
        typer.secho(f"error: {exc.format_message()}", fg="red", err=True)
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    return code if isinstance(code, int) else 0
