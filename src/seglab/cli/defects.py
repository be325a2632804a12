"""Steel-defect verbs: ``evaluate`` and ``predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    app,
)
from seglab.errors import SeglabError


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
    from seglab.infer.predictor import check_task
    from seglab.models import zoo
    from seglab.models.folder import read_config

    folder = zoo.resolve(model)
    config = read_config(folder)
    check_task(config, "defects", model)  # a cut-out model is judged by gate-report
    id_list = [s.strip() for s in ids.read_text().splitlines() if s.strip()] if ids else None
    dataset = open_for_model(config, str(data), fmt, id_list)
    for image, why in getattr(dataset, "excluded", []):
        typer.secho(f"left out {image}: {why}", fg="yellow", err=True)
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
    engine: Engine = "local",
    address: Address = None,
    ray_workers: RayWorkers = 2,
    cpus_per_worker: CpusPerWorker = 1.0,
    gpus_per_worker: GpusPerWorker = 0.0,
    parquet: Parquet = False,
) -> None:
    """Predict defects: submission CSV, per-class masks, overlays and a per-image summary."""
    from seglab.data.images import check_inputs, is_url
    from seglab.infer.predictor import check_task
    from seglab.models import zoo
    from seglab.models.folder import read_config

    if layout not in ("split", "combined"):
        raise SeglabError(f"--layout must be 'split' or 'combined', not {layout!r}")
    _check_engine(engine, images)
    folder = zoo.resolve(model)  # a missing model is named first, then inputs, before loading
    check_task(read_config(folder), "defects", model)
    check_inputs(*[i for i in images if not is_url(i)])
    if engine == "ray":
        from seglab.engines import raydata

        summary = raydata.predict_files(
            model, images, out, layout=layout, batch_size=batch_size, backend=backend,
            tta=tta, address=address, workers=ray_workers, cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker, resume=resume, parquet=parquet)
    else:
        from seglab.defects.batch import predict_files
        from seglab.infer.predictor import load_model

        predictor = load_model(model, backend=backend, task="defects")
        predictor.tta = tta
        summary = predict_files(predictor, images, out, layout=layout, batch_size=batch_size,
                                workers=workers, resume=resume)
    typer.echo(f"{summary['images']} images, {summary['defective']} defective, "
               f"{len(summary['errors'])} skipped; results in {out}")
    _exit_for(summary.errors)
