"""Background-removal verbs: ``synth``, ``cutout``, ``gate-report``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from seglab.cli.app import (
    Address,
    CpusPerWorker,
    Engine,
    GpusPerWorker,
    Parquet,
    RayWorkers,
    _check_engine,
    _exit_for,
    _friendly,
    _is_model,
    app,
)
from seglab.errors import SeglabError

if TYPE_CHECKING:
    from seglab.infer.predictor import Predictor


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
    from seglab.data import cutouts
    from seglab.data import synth as synthesis
    from seglab.data.backgrounds import list_photos
    from seglab.recipes import SynthSpec, load_recipe

    spec = load_recipe(recipe).data.synth or SynthSpec()
    fgs, skipped = cutouts.load_foregrounds(foregrounds, spec)
    for line in skipped:
        typer.secho(f"skipped foreground: {line}", fg="yellow", err=True)
    gone = cutouts.excluded(fgs, spec.exclude, foregrounds)
    fgs = [fg for fg in fgs if fg.name not in gone]
    if not fgs:
        raise SeglabError(f"data.synth.exclude of {recipe} leaves no cut-out in {foregrounds}")
    folders = backgrounds or []
    hands = list_photos([f for f in folders if "hand" in str(f).lower()])
    rooms = list_photos([f for f in folders if "hand" not in str(f).lower()])
    maker = synthesis.Synthesizer(spec, fgs, rooms, hands, seed=seed)
    synthesis.generate(maker, out, n, workers=workers)
    typer.echo(f"{n} composites from {len(fgs)} cut-outs, {len(rooms)} room and {len(hands)} "
               f"hand photos in {out}")


@app.command()
@_friendly
def cutout(
    inputs: Annotated[list[str], typer.Argument(
        help="[MODEL] IMAGES...: files, folders or globs (- reads one image from stdin), "
             "optionally after a cut-out model folder or zoo name (default: the zoo's "
             "jewellery-cutout). With --watch: IN_DIR [OUT_DIR].",
        metavar="[MODEL] IMAGES...")],
    out: Annotated[str | None, typer.Option(
        "--out", "-o", help="Output folder (default: cutouts); for one input, an output "
        "file instead (.png, .webp or .jpg: what a person is shown) or - for PNG on "
        "stdout.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Cut-out model folder or zoo name.")] = None,
    bg_color: Annotated[str | None, typer.Option(
        "--bgcolor", "--bg-color", help="Put cut-outs on this colour (#ffffff or r,g,b) "
        "instead of transparency.")] = None,
    soft_edges: Annotated[bool, typer.Option(help="Keep soft alpha edges.")] = False,
    mask_only: Annotated[bool, typer.Option(
        "--only-mask", "--mask-only", "-om", help="Write only the masks (no cut-outs, "
        "review sheet or plots).")] = False,
    watch: Annotated[bool, typer.Option(
        "--watch", "-w", help="Watch IN_DIR and cut out photos as they land, until "
        "Ctrl-C; a restarted watch skips what is done.")] = False,
    review: Annotated[bool, typer.Option(help="Write the review sheet and gate report.")]
    = True,
    backend: Annotated[str, typer.Option(help="Inference backend, or auto.")] = "auto",
    workers: Annotated[int, typer.Option(help="Processes decoding images.", min=0)] = 2,
    resume: Annotated[bool, typer.Option(help="Skip images already in OUT/results.jsonl.")
                      ] = False,
    engine: Engine = "local",
    address: Address = None,
    ray_workers: RayWorkers = 2,
    cpus_per_worker: CpusPerWorker = 1.0,
    gpus_per_worker: GpusPerWorker = 0.0,
    parquet: Parquet = False,
) -> None:
    """Cut products out of photos; show a cut-out only when the confidence gate accepts it."""
    from seglab.cutout.batch import cutout_files
    from seglab.cutout.remove import OUTPUT_FORMATS, parse_colour
    from seglab.data.images import check_inputs, is_url
    from seglab.infer.predictor import load_model
    from seglab.models import zoo

    images = list(inputs)
    if model is None and len(images) > 1 and _is_model(images[0]):
        model = images.pop(0)
    background = parse_colour(bg_color)  # a typo is reported before a model is loaded
    zoo.resolve(model or zoo.DEFAULT_CUTOUT)
    one_file = out is not None and (out == "-" or Path(out).suffix.lower() in OUTPUT_FORMATS)
    if watch:
        if out is None and len(images) == 2:
            out = images.pop()
        if one_file or len(images) != 1 or not Path(images[0]).is_dir():
            raise SeglabError("--watch takes one folder to watch and an output folder: "
                              "seglab cutout -w IN_DIR OUT_DIR")
    elif one_file:
        if len(images) != 1 or Path(images[0]).is_dir():
            raise SeglabError(f"-o {out} writes one file: give one image (or -o FOLDER for "
                              "several)")
        if images[0] != "-":
            check_inputs(*images)
    else:
        _check_engine(engine, images)
        check_inputs(*[i for i in images if not is_url(i)])
    options = {"background": background, "soft_edges": soft_edges, "mask_only": mask_only}
    if engine == "ray" and not (watch or one_file):
        from seglab.engines import raydata
        from seglab.infer.predictor import check_task
        from seglab.models.folder import read_config

        name = model or zoo.DEFAULT_CUTOUT
        check_task(read_config(zoo.resolve(name)), "cutout", name)
        summary = raydata.cutout_files(
            model or zoo.DEFAULT_CUTOUT, images, out or "cutouts", review=review,
            backend=backend, address=address, workers=ray_workers,
            cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, resume=resume,
            parquet=parquet, **options)
        typer.echo(f"{summary.accepted} of {summary.images} accepted, "
                   f"{len(summary.errors)} skipped; results in {out or 'cutouts'}")
        _exit_for(summary.errors)
        return
    if engine == "ray":
        raise SeglabError("--engine ray runs over folders, globs and URLs into an output "
                          "folder; --watch and one-file outputs run locally")
    predictor = load_model(model or zoo.DEFAULT_CUTOUT, backend=backend, task="cutout")
    if watch:
        _watch(predictor, Path(images[0]), Path(out or "cutouts"), options)
    elif one_file:
        _one_file(predictor, images[0], str(out), options)
    else:
        summary = cutout_files(predictor, images, out or "cutouts", review=review,
                               workers=workers, resume=resume, **options)
        typer.echo(f"{summary.accepted} of {summary.images} accepted, "
                   f"{len(summary.errors)} skipped; results in {out or 'cutouts'}")
        _exit_for(summary.errors)


def _one_file(predictor: Predictor, source: str, out: str, options: dict) -> None:
    """rembg's ``i`` door: one image in (a file or - for stdin), one file out (or -)."""
    from seglab.cutout.remove import OUTPUT_FORMATS, encode_shown, remove_batch
    from seglab.data.files import write_bytes_atomic
    from seglab.data.images import read_image
    from seglab.errors import ImageReadError

    try:
        image = read_image(sys.stdin.buffer.read() if source == "-" else source,
                           name="stdin" if source == "-" else None)
    except ImageReadError as exc:  # a bad input is skipped (status 1), not a user mistake
        typer.secho(f"skipped: {exc}", fg="yellow", err=True)
        raise typer.Exit(1) from None
    cut = remove_batch(predictor, [image])[0]
    fmt = "png" if out == "-" else OUTPUT_FORMATS[Path(out).suffix.lower()]
    data = encode_shown(cut, fmt, only_mask=options["mask_only"],
                        bgcolor=options["background"], soft_edges=options["soft_edges"])
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_bytes_atomic(out, data)
    d = cut.decision
    what = ("the mask" if options["mask_only"] else "the cut-out" if d.accepted
            else "the original photo")
    figures = f"confidence {d.confidence:.3f}, mask {d.area_fraction:.1%} of the photo"
    verdict = f"accepted ({figures})" if d.accepted else f"not accepted: {d.reason} ({figures})"
    typer.echo(f"{verdict}; wrote {what} to {'stdout' if out == '-' else out}", err=True)


def _watch(predictor: Predictor, folder: Path, out: Path, options: dict) -> None:
    from seglab.cutout.batch import watch

    typer.echo(f"watching {folder} for photos (Ctrl-C to stop); outputs in {out}", err=True)
    try:
        watch(predictor, folder, out, report=lambda line: typer.echo(line, err=True), **options)
    except KeyboardInterrupt:
        typer.echo(f"stopped; results in {out}", err=True)


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
