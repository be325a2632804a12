"""Verbs that ship and run models: ``export``, ``serve``, ``models``, ``pack``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seglab.cli.app import _friendly, app
from seglab.errors import SeglabError


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
        verdict = "ok" if r.get("passed") else "skipped" if r.get("skipped") else "REFUSED"
        detail = (f"mask Dice {r['mask_dice']:.4f}, {r['ms_per_image']:.1f} ms/image"
                  if "ms_per_image" in r else r.get("error") or r.get("skipped", ""))
        if "heldout_mask_dice" in r:
            detail += f", held-out mask Dice {r['heldout_mask_dice']:.4f}"
        if r.get("int8_part"):
            detail += f", int8 in the {r['int8_part']}"
        elif r.get("fp32_convolutions"):
            detail += f", {len(r['fp32_convolutions'])} convolutions kept in fp32"
        if r.get("refused_because"):
            detail += f" ({r['refused_because']})"
        typer.echo(f"{name:13s} {verdict:8s} {detail}")
    from seglab.infer.runtimes import choose

    typer.echo(f"timed on {record.timed_on}; backend=auto will use: {choose(model)} here "
               f"(on another CPU it times the passing backends again: seglab backends "
               f"MODEL); results in {model}/backends.json")


@app.command()
@_friendly
def backends(
    model: Annotated[str, typer.Argument(help="Model folder or zoo name (`seglab models`).")],
    retime: Annotated[bool, typer.Option(help="Time the passing backends here again.")]
    = False,
) -> None:
    """Show which backends passed the export check and what `auto` picks on this CPU."""
    from seglab.infer.runtimes import read_checks, timings_here
    from seglab.models import zoo

    folder = zoo.resolve(model)
    record = read_checks(folder)
    if not record:
        typer.echo(f"{model} was never exported: auto runs PyTorch fp32 (seglab export "
                   f"{model} checks the faster runtimes)")
        return
    typer.echo(f"export check on {record.get('timed_on') or 'an unrecorded CPU'}:")
    for name, r in record.get("backends", {}).items():
        verdict = ("passed" if r.get("passed") else
                   f"not checked ({r['skipped']})" if r.get("skipped") else
                   f"refused ({r.get('refused_because') or r.get('error', '')})")
        ms = f"{r['ms_per_image']:.1f} ms/image there" if "ms_per_image" in r else ""
        typer.echo(f"  {name:13s} {verdict} {ms}")
    here = timings_here(folder, record, retime=retime)
    typer.echo(f"this CPU: {here['cpu']}")
    for name, ms in here["ms_per_image"].items():
        typer.echo(f"  {name:13s} {ms:.1f} ms/image here" if ms is not None else f"  {name}")
    for name, why in here.get("skipped", {}).items():
        typer.echo(f"  {name:13s} not used here: {why}")
    typer.echo(f"auto picks {here['choice']} (speeds from: {here['source']})")


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
        help="SQLAlchemy URL, e.g. postgresql://user@host/db (default: SQLite in --data-dir); "
             "replicas share one.")] = None,
    store: Annotated[str | None, typer.Option(
        help="Item images: a folder (a shared filesystem for replicas) or an fsspec URL such "
             "as s3://bucket/prefix (default: --data-dir/items).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of server limits.")] = None,
    max_upload_mb: Annotated[float | None, typer.Option(help="Largest request body.")] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="Inferences at once.")] = None,
    auth: Annotated[str | None, typer.Option(
        help="Sign-in and API keys: auto (on unless on loopback), on, or off (loopback "
             "only).")] = None,
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
                                   "max_concurrent": max_concurrent,
                                   "auth": auth}.items() if v is not None}
    spec = load_server_spec(config, overrides)
    typer.echo(f"seglab serving {len(models)} model(s) on http://{host}:{port}/ "
               f"(API docs at /docs, data in {data_dir})")
    run_server(models, host=host, port=port, data_dir=data_dir, db_url=db, store_url=store,
               spec=spec)



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
