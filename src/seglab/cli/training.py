"""Verbs that make models: ``recipes``, ``train``, ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seglab.cli.app import _friendly, app


@app.command()
@_friendly
def recipes(name: Annotated[str | None, typer.Argument(help="Show one recipe.")] = None) -> None:
    """List the shipped recipes, or validate and print one (name or YAML path)."""
    from seglab.recipes import load_recipe, shipped

    if name is None:
        for key, path in sorted(shipped().items()):
            recipe = load_recipe(path)
            typer.echo(f"{key:28s} {recipe.task:8s} {recipe.model.arch}/{recipe.model.encoder}")
        return
    typer.echo(load_recipe(name).model_dump_json(indent=2))


@app.command()
@_friendly
def train(
    recipe: Annotated[str, typer.Argument(help="Shipped recipe name or YAML path.")],
    data: Annotated[Path, typer.Option(help="Data folder in the recipe's format.")],
    out: Annotated[Path, typer.Option(help="Run folder (checkpoints, logs, model/).")],
    resume: Annotated[bool, typer.Option(help="Continue from out/checkpoints/last.ckpt.")] = False,
    init: Annotated[str | None, typer.Option(
        help="Start from this model folder or zoo name (fine-tune): train.init_from.")] = None,
    devices: Annotated[str, typer.Option(help="Devices per node (Lightning).")] = "1",
    num_nodes: Annotated[int, typer.Option(help="Nodes for multi-node DDP.")] = 1,
    accelerator: Annotated[str, typer.Option(help="cpu, gpu or auto.")] = "auto",
    strategy: Annotated[str, typer.Option(help="auto, ddp, ddp_spawn ...")] = "auto",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: train.lr=0.001")]
    = None,
    tune: Annotated[bool, typer.Option(help="Tune thresholds on the validation split.")] = True,
    factors: Annotated[bool, typer.Option(help="Measure the model card's factors.")] = True,
) -> None:
    """Train a model, tune it on the validation split, and write its model card."""
    from seglab.training.run import fit

    typer.echo(f"training {recipe} on {data}")
    device_arg: int | str = int(devices) if devices.isdigit() else devices
    result = fit(recipe, data, out, overrides=set_ or (), init=init, resume=resume,
                 tune=tune, factors=factors, devices=device_arg, num_nodes=num_nodes,
                 accelerator=accelerator, strategy=strategy)
    if result.metrics:  # rank 0 only under DDP
        typer.echo(f"model: {result.model_dir}; {result.summary()}")


@app.command()
@_friendly
def soup(
    models: Annotated[list[str], typer.Argument(
        help="Two or more model folders or zoo names fine-tuned from the same weights.")],
    out: Annotated[Path, typer.Option(help="The new model folder.")],
) -> None:
    """Average the weights of several models into one (a model soup); measure it after."""
    from seglab.models.soup import soup as make_soup

    folder = make_soup(models, out)
    typer.echo(f"model: {folder} (the mean of {len(models)} models' weights; not measured yet)")


@app.command()
@_friendly
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo writes everything.")] = Path(
        "demo-output"),
    images: Annotated[int, typer.Option(help="Generated strips.", min=8)] = 64,
    steel_data: Annotated[Path | None, typer.Option(
        help="NEU-Seg folder for the steel zoo model (default: ../shared/data/neu-seg if "
             "there).")] = None,
    scenes_data: Annotated[Path | None, typer.Option(
        help="Folder of real jewellery photos for the cut-out zoo model (default: "
             "../shared/data/jewellery-scenes if there).")] = None,
) -> None:
    """Train a small model on generated strips, then run the zoo's models on new photos."""
    from seglab.demo import run_demo

    run_demo(out, images, steel_data, scenes_data)
