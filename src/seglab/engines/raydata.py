"""``--engine ray``: ``seglab predict`` and ``seglab cutout`` on Ray Data.

Images are read and decoded in Ray tasks, the model runs in a pool of actors (one model
load per actor, on CPUs or a share of a GPU), and each actor writes its images' files with
the same functions as the local path (:func:`seglab.defects.batch.write_prediction`,
:func:`seglab.cutout.batch.write_cutout`). Only the small per-image rows travel back to
the driver, which appends them to the same resumable ``summary.jsonl`` /
``results.jsonl`` as they finish and writes the same CSVs, so the two engines give the
same outputs and a rerun with ``resume`` skips what is done. Results come back in input
order (Ray's ``preserve_order``), so even the files' row order matches the local path.

On a cluster (``address``), every node needs seglab installed and ``out`` must be a
folder all nodes share; inputs may be fsspec URLs (``s3://...``) every node can read.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from seglab.cutout.batch import CutoutSummary, finish_cutouts, write_cutout
from seglab.defects.batch import PredictSummary, describe, finish_predictions, write_prediction
from seglab.errors import SeglabError
from seglab.results import FileError

Task = Literal["defects", "cutout"]


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SeglabError("--engine ray needs Ray: pip install 'seglab[ray]'") from None
    return ray


def start(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect to the Ray cluster at ``address``, or start one on this machine.

    Returns whether this call started Ray (then :func:`stop` shuts it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                               "log_to_driver": False, "configure_logging": True}
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one line per stage otherwise
    if address:
        ray.init(address=address, **options)
    else:
        # A local Ray reserves 30% of RAM for its object store by default; decoded images
        # pass through it a batch at a time, so 1 GB is plenty on one machine.
        ray.init(num_cpus=num_cpus, object_store_memory=1 << 30, **options)
    return True


def stop() -> None:
    _ray().shutdown()


def _path_of(source: str) -> PurePosixPath | Path:
    return PurePosixPath(source.split("://", 1)[1]) if "://" in source else Path(source)


def _decode(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """A Ray task: read and decode a batch of images; a bad file becomes an error entry."""
    from seglab.data.images import read_source
    from seglab.errors import ImageReadError

    images, errors = [], []
    for source in batch["source"]:
        try:
            images.append(read_source(str(source)))
            errors.append("")
        except ImageReadError as exc:
            images.append(np.zeros((1, 1, 3), np.uint8))
            errors.append(str(exc))
    return {**batch, "image": images, "error": np.array(errors, dtype=object)}


class _Runner:
    """A Ray actor: one model load, then batches of decoded images to rows."""

    def __init__(self, task: Task, model: str, backend: str, tta: bool, threads: int,
                 device: str, out: str, options: dict[str, Any]) -> None:
        import torch

        from seglab.infer.predictor import load_model

        torch.set_num_threads(threads)
        self.task, self.out, self.options = task, Path(out), options
        self.predictor = load_model(model, device=device, backend=backend, task=task)
        self.predictor.tta = tta

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from seglab.cutout.remove import remove_batch

        ok = [i for i, e in enumerate(batch["error"]) if not e]
        images = [np.array(batch["image"][i]) for i in ok]  # writable copies
        if self.task == "defects":
            done = self.predictor.predict_batch(images) if images else []
        else:
            done = remove_batch(self.predictor, images) if images else []
        results = dict(zip(ok, zip(images, done, strict=True), strict=True))
        lines, reviews = [], []
        for i, source in enumerate(batch["source"]):
            source, stem, review = str(source), str(batch["stem"][i]), b""
            if i not in results:
                lines.append(json.dumps({"_error": str(batch["error"][i]), "_source": source}))
            elif self.task == "defects":
                image, pred = results[i]
                lines.append(json.dumps(write_prediction(
                    self.out, stem, source, image, pred,
                    write_masks=self.options["write_masks"],
                    write_overlays=self.options["write_overlays"])))
            else:
                _, cut = results[i]
                lines.append(json.dumps(write_cutout(
                    self.out, stem, source, cut, background=self.options["background"],
                    soft_edges=self.options["soft_edges"],
                    mask_only=self.options["mask_only"])))
                if int(batch["index"][i]) < self.options["review_limit"]:
                    from seglab.cutout.sheet import review_row  # matplotlib: cut-outs only

                    review = pickle.dumps(review_row(_path_of(source).name, cut))
            reviews.append(review)
        return {"line": np.array(lines, dtype=object), "review": np.array(reviews, dtype=object)}


def _run(task: Task, model: str, inputs: Sequence[str | os.PathLike[str]],
         out: str | os.PathLike[str], *, log_name: str, options: dict[str, Any],
         address: str | None, workers: int, cpus_per_worker: float, gpus_per_worker: float,
         batch_size: int, backend: str, tta: bool, resume: bool, progress: bool
         ) -> tuple[Any, list[FileError], list[dict], Any]:
    from seglab.data.files import JsonLines, output_names
    from seglab.data.images import list_sources
    from seglab.models import zoo
    from seglab.progress import bar as progress_bar

    ray = _ray()
    folder = str(zoo.resolve(model))  # a zoo name resolved once, on the driver
    out = Path(out).resolve()
    log = JsonLines(out / log_name, resume=resume)
    every = list_sources(*inputs)
    paths = {s: _path_of(s) for s in every}
    names = output_names(list(paths.values()))  # type: ignore[arg-type]
    stems = {s: names[p] for s, p in paths.items()}
    pending = log.pending(every)  # type: ignore[arg-type]
    errors: list[FileError] = []
    kept: list[dict] = []
    started = start(address, num_cpus=None if address else
                    int(np.ceil(workers * cpus_per_worker)) + 1)  # +1: the decoding tasks
    bar = progress_bar(total=len(pending), desc=f"{task} (ray, {workers} workers)",
                       unit="img", disable=not progress)
    try:
        if pending:
            ctx = ray.data.DataContext.get_current()
            ctx.execution_options.preserve_order = True
            ctx.enable_progress_bars = False
            items = [{"source": str(s), "stem": stems[s], "index": i}
                     for i, s in enumerate(pending)]
            ds = ray.data.from_items(items, override_num_blocks=max(
                1, min(len(items), 4 * workers)))
            # One CPU per decoding task: a fraction would start a Python process per
            # fractional slot (12 on two cores), each importing its libraries.
            ds = ds.map_batches(_decode, batch_size=batch_size, num_cpus=1)
            ds = ds.map_batches(
                _Runner, batch_size=batch_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
                fn_constructor_kwargs={
                    "task": task, "model": folder, "backend": backend, "tta": tta,
                    "threads": max(1, int(cpus_per_worker)), "out": str(out),
                    "device": "cuda" if gpus_per_worker else "cpu", "options": options})
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                rows = []
                for line, review in zip(batch["line"], batch["review"], strict=True):
                    row = json.loads(line)
                    if "_error" in row:
                        errors.append(FileError(image=row["_source"], error=row["_error"]))
                        bar.write(f"skipped: {row['_error']}", file=sys.stderr)
                        continue
                    rows.append(row)
                    if review:
                        kept.append(pickle.loads(review))  # our own actors' thumbnails
                    if progress and task == "defects":
                        bar.write(describe(row))
                log.append(rows)  # after the rows' files, written by the actors
                bar.update(len(batch["line"]))
    finally:
        bar.close()
        log.close()
        if started:
            stop()
    return log, errors, kept, folder


def _parquet(log: Any, path: Path) -> None:
    """The per-image rows as one Parquet file (for Spark, DuckDB, pandas), written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(log.rows())
    for row in rows:  # a mapping whose keys vary per image is kept as JSON text
        for key in ("rle", "area", "class_probability", "max_pixel_probability"):
            if key in row:
                row[key] = json.dumps(row[key])
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)


def predict_files(model: str, inputs: Sequence[str | os.PathLike[str]],
                  out: str | os.PathLike[str], *, layout: str = "split", batch_size: int = 8,
                  write_masks: bool = True, write_overlays: bool = True,
                  backend: str = "auto", tta: bool = False, address: str | None = None,
                  workers: int = 2, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                  resume: bool = False, progress: bool = True, parquet: bool = False
                  ) -> PredictSummary:
    """:func:`seglab.defects.batch.predict_files` on Ray: the same masks, overlays,
    ``summary.jsonl``, ``submission.csv``, ``summary.csv`` and ``summary.json``
    (``parquet``: also ``summary.parquet``). ``model`` is a folder or zoo name that
    every worker loads; ``workers`` actors of ``cpus_per_worker`` CPUs (and
    ``gpus_per_worker``, a fraction shares a GPU)."""
    from seglab.models.folder import read_config

    log, errors, _, folder = _run(
        "defects", model, inputs, out, log_name="summary.jsonl",
        options={"write_masks": write_masks, "write_overlays": write_overlays},
        address=address, workers=workers, cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker, batch_size=batch_size, backend=backend, tta=tta,
        resume=resume, progress=progress)
    config = read_config(folder)
    summary = finish_predictions(Path(out), log, config.class_names, layout, errors,
                                 config.display_name)
    if parquet:
        _parquet(log, Path(out) / "summary.parquet")
    return summary


def cutout_files(model: str, inputs: Sequence[str | os.PathLike[str]],
                 out: str | os.PathLike[str], *, background: tuple[int, int, int] | None = None,
                 soft_edges: bool = False, mask_only: bool = False, batch_size: int = 4,
                 review: bool = True, review_limit: int = 400, backend: str = "auto",
                 address: str | None = None, workers: int = 2, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, resume: bool = False, progress: bool = True,
                 parquet: bool = False) -> CutoutSummary:
    """:func:`seglab.cutout.batch.cutout_files` on Ray: the same ``masks/``, ``shown/``,
    ``cutouts/``, ``results.*``, review sheet and gate histograms (``parquet``: also
    ``results.parquet``)."""
    from seglab.models.folder import read_config
    from seglab.recipes import GateSpec

    review = review and not mask_only
    log, errors, kept, folder = _run(
        "cutout", model, inputs, out, log_name="results.jsonl",
        options={"background": background, "soft_edges": soft_edges, "mask_only": mask_only,
                 "review_limit": review_limit if review else 0},
        address=address, workers=workers, cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker, batch_size=batch_size, backend=backend, tta=False,
        resume=resume, progress=progress)
    config = read_config(folder)
    summary = finish_cutouts(Path(out), log, errors, kept, config.display_name,
                             config.gate or GateSpec(), review=review)
    if parquet:
        _parquet(log, Path(out) / "results.parquet")
    return summary
