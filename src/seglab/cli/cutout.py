"""Background-removal verbs: ``synth``, ``cutout``, ``gate-report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seglab.cli.app import _exit_for, _friendly, _is_model, app


@app.command()
@_friendly
def synth(
    foregrounds: Annotated[Path, typer.Option(help="Folder of RGBA cut-outs.")],
    out: Annotated[Path, typer.Option(help="Output folder (images/, masks/, alpha/).")],
    n: Annotated[int, typer.Option("-n", "--count", min=1, help="Composites to make.")] = 100,
    backgrounds: Annotated[list[Path] | None, typer.Option(
        help="Photo folders; a folder whose path mentions 'hand' counts as hands, "
             "others as rooms. Repeat the option.")] = None,
    recipe: Annotated[str, typer.Option(help="Recipe whose data.synth section to use.")]
    = "jewellery-unet-effb3",
    seed: Annotated[int, typer.Option()] = 0,
    workers: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Make synthetic composites: cut-outs on colour fields, shapes, rooms and hands."""
    from seglab.data import synth as synthesis
    from seglab.recipes import SynthSpec, load_recipe

    spec = load_recipe(recipe).data.synth or SynthSpec()
    fgs, skipped = synthesis.load_foregrounds(foregrounds, spec)
    for line in skipped:
        typer.secho(f"skipped foreground: {line}", fg="yellow", err=True)
    folders = backgrounds or []
    hands = synthesis.list_photos([f for f in folders if "hand" in str(f).lower()])
    rooms = synthesis.list_photos([f for f in folders if "hand" not in str(f).lower()])
    maker = synthesis.Synthesizer(spec, fgs, rooms, hands, seed=seed)
    synthesis.generate(maker, out, n, workers=workers)
    typer.echo(f"{n} composites from {len(fgs)} cut-outs, {len(rooms)} room and {len(hands)} "
               f"hand photos in {out}")


@app.command()
@_friendly
def cutout(
    inputs: Annotated[list[str], typer.Argument(
        help="[MODEL] IMAGES...: files, folders or globs, optionally after a cut-out model "
             "folder or zoo name (default: the zoo's jewellery-cutout).",
        metavar="[MODEL] IMAGES...")],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("cutouts"),
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Cut-out model folder or zoo name.")] = None,
    bg_color: Annotated[str | None, typer.Option(help="Put cut-outs on this colour "
                                                 "(#ffffff) instead of transparency.")] = None,
    soft_edges: Annotated[bool, typer.Option(help="Keep soft alpha edges.")] = False,
    mask_only: Annotated[bool, typer.Option(help="Write only the masks.")] = False,
    review: Annotated[bool, typer.Option(help="Write the review sheet and gate report.")]
    = True,
    backend: Annotated[str, typer.Option(help="Inference backend, or auto.")] = "auto",
    workers: Annotated[int, typer.Option(help="Processes decoding images.", min=0)] = 2,
    resume: Annotated[bool, typer.Option(help="Skip images already in OUT/results.jsonl.")
                      ] = False,
) -> None:
    """Cut products out of photos; show a cut-out only when the confidence gate accepts it."""
    from seglab.cutout.batch import cutout_files
    from seglab.cutout.remove import parse_colour
    from seglab.data.images import check_inputs
    from seglab.infer.predictor import load_model
    from seglab.models import zoo

    images = list(inputs)
    if model is None and len(images) > 1 and _is_model(images[0]):
        model = images.pop(0)
    background = parse_colour(bg_color)  # a typo is reported before a model is loaded
    zoo.resolve(model or zoo.DEFAULT_CUTOUT)
    check_inputs(*images)
    predictor = load_model(model or zoo.DEFAULT_CUTOUT, backend=backend, task="cutout")
    summary = cutout_files(predictor, images, out, background=background,
                           soft_edges=soft_edges, mask_only=mask_only, review=review,
                           workers=workers, resume=resume)
    typer.echo(f"{summary['accepted']} of {summary['images']} accepted, "
               f"{len(summary['errors'])} skipped; results in {out}")
    _exit_for(summary.errors)


@app.command("gate-report")
@_friendly
def gate_report_cmd(
    model: Annotated[str, typer.Argument(help="Cut-out model folder or zoo name.")],
    data: Annotated[Path, typer.Option(help="Labelled photos: images/ + masks/, or RGBA.")],
    out: Annotated[Path, typer.Option(help="Where the report goes.")],
) -> None:
    """IoU per image and precision of accepted cut-outs against coverage, on labelled photos."""
    from seglab.cutout.batch import gate_report
    from seglab.data.datasets import CutoutDataset
    from seglab.infer.predictor import load_model

    report = gate_report(load_model(model, task="cutout"), CutoutDataset(data), out,
                         name=str(data))
    typer.echo(f"mean IoU {report['mean_iou']:.4f}, accepted {report['accepted_share']:.1%}, "
               f"precision of accepted {report['precision_of_accepted']}")
