"""The ``seglab`` command line: verbs mirror the library's functions.

A user mistake (bad file, bad recipe, broken model folder) prints one clear
``error:`` line and exits with status 2, never a traceback.
"""

from __future__ import annotations

import functools
import sys
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
def evaluate(
    model: Annotated[str, typer.Argument(help="Model folder or zoo name (`seglab models`).")],
    data: Annotated[Path, typer.Option(help="Labelled data folder.")],
    out: Annotated[Path | None, typer.Option(help="Where metrics and plots go.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Data layout if not the "
                                            "training one.")] = None,
    tune: Annotated[bool, typer.Option(help="Tune thresholds on this data and store them "
                                       "in the model.")] = False,
    tta: Annotated[bool, typer.Option(help="Flip test-time augmentation.")] = False,
    factors: Annotated[bool, typer.Option(help="Re-measure under lighting/angle/distance/"
                                          "camera changes.")] = False,
    ids: Annotated[Path | None, typer.Option(help="Text file: one image id per line.")] = None,
) -> None:
    """Evaluate a model on labelled data: metrics.json and plots (tune: update the model)."""
    from seglab.defects.evaluate import document, open_for_model, summary_line
    from seglab.models import zoo
    from seglab.models.folder import read_config

    folder = zoo.resolve(model)
    config = read_config(folder)
    id_list = [s.strip() for s in ids.read_text().splitlines() if s.strip()] if ids else None
    dataset = open_for_model(config, str(data), fmt, id_list)
    metrics = document(str(folder), dataset, dataset_name=str(data), tune_first=tune,
                       factors=factors, tta=tta, out_dir=str(out or folder / "evaluation"),
                       update_model=tune)
    typer.echo(summary_line(metrics))
    typer.echo(f"written: {out or folder / 'evaluation'}/metrics.json")


@app.command()
@_friendly
def predict(
    model: Annotated[str, typer.Argument(help="Model folder or zoo name (`seglab models`).")],
    images: Annotated[list[str], typer.Argument(help="Files, folders or globs.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    layout: Annotated[str, typer.Option(help="Submission CSV layout: split "
                                        "(ImageId,ClassId,EncodedPixels) or combined "
                                        "(ImageId_ClassId,EncodedPixels).")] = "split",
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    tta: Annotated[bool, typer.Option(help="Flip test-time augmentation.")] = False,
    backend: Annotated[str, typer.Option(
        help="torch, torch-bf16, onnx, onnx-int8, openvino, openvino-bf16, openvino-int8, "
             "or auto (fastest that passed seglab export's check).")] = "auto",
    workers: Annotated[int, typer.Option(help="Processes decoding images.", min=0)] = 2,
    resume: Annotated[bool, typer.Option(help="Skip images already in OUT/summary.jsonl.")
                      ] = False,
) -> None:
    """Predict defects: submission CSV, per-class masks, overlays and a per-image summary."""
    from seglab.data.images import check_inputs
    from seglab.defects.batch import predict_files
    from seglab.infer.predictor import load_model
    from seglab.models import zoo

    if layout not in ("split", "combined"):
        raise SeglabError(f"--layout must be 'split' or 'combined', not {layout!r}")
    zoo.resolve(model)  # a missing model is named first, then inputs, before any loading
    check_inputs(*images)
    predictor = load_model(model, backend=backend, task="defects")
    predictor.tta = tta
    summary = predict_files(predictor, images, out, layout=layout, batch_size=batch_size,
                            workers=workers, resume=resume)
    typer.echo(f"{summary['images']} images, {summary['defective']} defective, "
               f"{len(summary['errors'])} skipped; results in {out}")
    _exit_for(summary.errors)


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


@app.command()
@_friendly
def export(
    model: Annotated[str, typer.Argument(help="Model folder or zoo name (`seglab models`).")],
    samples: Annotated[list[Path] | None, typer.Option(
        help="Images to check agreement and calibrate int8 on (files, folders, globs).")] = None,
    format_: Annotated[list[str] | None, typer.Option(
        "--format", help="onnx, openvino, openvino-bf16, torch-bf16, onnx-int8, openvino-int8 "
        "(default: all).")] = None,
    size: Annotated[tuple[int, int] | None, typer.Option(
        help="Input height and width, for models trained at full size; the exported "
             "backends then run every image at this size.")] = None,
    count: Annotated[int, typer.Option(help="Sample images used at most.", min=1)] = 8,
    min_dice: Annotated[float, typer.Option(
        help="Least mask agreement (Dice) with PyTorch fp32 a backend needs.", min=0,
        max=1)] = 0.995,
    max_prob_diff: Annotated[float, typer.Option(
        help="Largest change allowed in a probability decisions are made from (class "
             "probability, cut-out gate confidence).", min=0, max=1)] = 0.02,
    holdout: Annotated[float, typer.Option(
        help="Share of the samples int8 is not calibrated on and must also agree on.",
        min=0, max=0.9)] = 0.5,
) -> None:
    """Export to ONNX (and OpenVINO, int8), check each against PyTorch, record the fastest."""
    from seglab.deploy.verify import EXPORTS, sample_inputs
    from seglab.deploy.verify import export as run_export
    from seglab.models import zoo

    model = zoo.resolve(model)
    formats = format_ or list(EXPORTS)
    unknown = [f for f in formats if f not in EXPORTS]
    if unknown:
        raise SeglabError(f"unknown export format(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(EXPORTS)}")
    batch = sample_inputs(model, samples or [], count=count, size=size)
    record = run_export(model, samples=batch, formats=formats, min_dice=min_dice,
                        max_prob_diff=max_prob_diff, holdout=holdout)
    for name, r in record["backends"].items():
        verdict = "ok" if r.get("passed") else "REFUSED"
        detail = (f"mask Dice {r['mask_dice']:.4f}, {r['ms_per_image']:.1f} ms/image"
                  if "ms_per_image" in r else r.get("error", ""))
        if "heldout_mask_dice" in r:
            detail += f", held-out mask Dice {r['heldout_mask_dice']:.4f}"
        if r.get("fp32_convolutions"):
            detail += f", {len(r['fp32_convolutions'])} convolutions kept in fp32"
        if r.get("refused_because"):
            detail += f" ({r['refused_because']})"
        typer.echo(f"{name:13s} {verdict:8s} {detail}")
    from seglab.infer.runtimes import choose

    typer.echo(f"backend=auto will use: {choose(model)}; results in {model}/backends.json")


@app.command()
@_friendly
def serve(
    models: Annotated[list[str] | None, typer.Argument(
        help="Model folders or zoo names (defect and/or cut-out); none: the whole zoo.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Uploads, outputs and the SQLite file.")] = Path(
        "seglab-data"),
    db: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL, e.g. postgresql://user@host/db (default: SQLite in --data-dir).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of server limits.")] = None,
    max_upload_mb: Annotated[float | None, typer.Option(help="Largest request body.")] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="Inferences at once.")] = None,
) -> None:
    """Run the web service: JSON API under /api/v1, pages for people at /."""
    from seglab.models import zoo
    from seglab.serve.app import serve as run_server
    from seglab.serve.config import load_server_spec

    models = [str(zoo.resolve(m)) for m in models] if models else [
        str(zoo.resolve(n)) for n in zoo.names()]
    if not models:
        raise SeglabError("no model to serve: name model folders, or install seglab with its zoo")
    overrides = {k: v for k, v in {"max_upload_mb": max_upload_mb,
                                   "max_concurrent": max_concurrent}.items() if v is not None}
    spec = load_server_spec(config, overrides)
    typer.echo(f"seglab serving {len(models)} model(s) on http://{host}:{port}/ "
               f"(API docs at /docs, data in {data_dir})")
    run_server(models, host=host, port=port, data_dir=data_dir, db_url=db, spec=spec)


@app.command()
@_friendly
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo writes everything.")] = Path(
        "demo-output"),
    images: Annotated[int, typer.Option(help="Generated strips.", min=8)] = 64,
    steel_data: Annotated[Path | None, typer.Option(
        help="NEU-Seg folder for the steel zoo model (default: ../shared/data/neu-seg if "
             "there).")] = None,
) -> None:
    """Train a small model on generated strips, then run the zoo's models on new photos."""
    from seglab.demo import run_demo

    run_demo(out, images, steel_data)


@app.command()
@_friendly
def models() -> None:
    """List the zoo's ready models with their held-out figures and cards."""
    from seglab.models import zoo

    for entry in zoo.entries():
        typer.echo(f"{entry.name:18s} {entry.task:8s} {entry.architecture:22s} "
                   f"{entry.parameters / 1e6:5.1f} M parameters, {entry.size_mb:.0f} MB, "
                   f"classes: {', '.join(entry.classes)}")
        for key, value in entry.figures.items():
            shown = f"{value:.4g}" if isinstance(value, float) else value
            typer.echo(f"    {key}: {shown}")
        typer.echo(f"    card: {entry.card}")


@app.command()
@_friendly
def pack(
    model: Annotated[Path, typer.Argument(help="Trained model folder.")],
    out: Annotated[Path, typer.Argument(help="Released model folder to write.")],
    name: Annotated[str, typer.Option(help="The released name (a zoo name).")],
    figures: Annotated[Path | None, typer.Option(
        help="JSON file of held-out figures for `seglab models` to list.")] = None,
    max_shard_mb: Annotated[float, typer.Option(help="Largest weights file.", min=1)] = 16.0,
    fp32: Annotated[bool, typer.Option(help="Keep fp32 weights (default: fp16).")] = False,
) -> None:
    """Release a trained model: fp16 weights in shards, card and reports, under a name."""
    import json

    from seglab.models.folder import pack as run_pack

    numbers = json.loads(figures.read_text(encoding="utf-8")) if figures else None
    folder = run_pack(model, out, name=name, half=not fp32, max_shard_mb=max_shard_mb,
                      figures=numbers)
    typer.echo(f"released {name} in {folder}")


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


if __name__ == "__main__":  # python -m seglab.cli
    sys.exit(app())
