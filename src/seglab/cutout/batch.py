"""``seglab cutout`` on folders (resumable, a review sheet per run) and the gate
report measured on composites with known masks.
"""
from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seglab.cutout.remove import remove, remove_batch
from seglab.infer.predictor import Predictor
from seglab.metrics import iou
from seglab.recipes import GateSpec

if TYPE_CHECKING:
    from seglab.data.datasets import SegmentationDataset
from seglab.results import FileError, Result


class CutoutSummary(Result):
    """What ``cutout_files`` did: photos processed, how many a person is shown as a
    cut-out, unreadable files (reported and skipped), the gate used, the results file."""

    model: str
    images: int
    accepted: int
    errors: list[FileError]
    gate: dict[str, Any]
    results: str = "results.jsonl"


class GateReport(Result):
    """The gate measured on labelled photos: IoU per image, the share accepted, and the
    precision of the accepted (IoU >= ``iou_good``) against coverage."""

    data: str
    images: int
    mean_iou: float
    median_iou: float
    accepted_share: float
    precision_of_accepted: float | None
    mean_iou_accepted: float | None
    iou_good: float
    gate: dict[str, Any]
    curve: list[dict[str, Any]]
    results: list[dict[str, Any]]


def cutout_files(predictor: Predictor, inputs: Sequence[str | os.PathLike[str]],
                 out: str | os.PathLike[str], *, background: tuple[int, int, int] | None = None,
                 soft_edges: bool = False, mask_only: bool = False, batch_size: int = 4,
                 review: bool = True, progress: bool = True, workers: int = 0,
                 resume: bool = False, review_limit: int = 400,
                 names: dict[Path, str] | None = None) -> CutoutSummary:
    """Cut out every image; write ``shown/``, ``cutouts/``, ``masks/``, ``results.*``.

    ``shown/<name>.png`` is what a person sees (the cut-out if accepted, else the
    original); ``cutouts/`` holds only the accepted cut-outs, so nothing there was
    refused by the gate; ``masks/`` every mask, for review. ``mask_only`` writes the
    masks and results alone (no cut-outs, review sheet or plots). ``names`` fixes each
    input's output name (default: distinct names over this run's inputs). Streams like
    :func:`seglab.defects.batch.predict_files`: one line per image in
    ``results.jsonl`` as it is done (``resume=True`` skips those), then
    ``results.csv`` and ``results.json``. The review sheet shows the first
    ``review_limit`` images of this run (its thumbnails are kept in memory).
    Unreadable files are reported in ``errors`` and skipped.
    """
    from seglab.data.files import JsonLines, output_names
    from seglab.data.images import image_batches, list_images
    from seglab.progress import bar as progress_bar

    out = Path(out)
    log = JsonLines(out / "results.jsonl", resume=resume)
    every = list_images(*inputs)
    stems = names if names is not None else output_names(every)
    review = review and not mask_only
    paths = log.pending(every)
    errors: list[FileError] = []
    kept = []
    bar = progress_bar(total=len(paths), desc="cutout", unit="img", disable=not progress)
    skipped = 0
    try:
        for good in image_batches(paths, batch_size, errors, workers=workers,
                                  report=lambda line: bar.write(line, file=sys.stderr)):
            cuts = remove_batch(predictor, [img for _, img in good]) if good else []
            rows = []
            for (path, _), cut in zip(good, cuts, strict=True):
                rows.append(write_cutout(out, stems[path], path, cut, background=background,
                                         soft_edges=soft_edges, mask_only=mask_only))
                if review and len(kept) < review_limit:
                    from seglab.cutout.sheet import review_row

                    kept.append(review_row(path.name, cut))
            log.append(rows)
            bar.update(len(good) + len(errors) - skipped)
            skipped = len(errors)
    finally:
        bar.close()
        log.close()
    return finish_cutouts(out, log, errors, kept, predictor.config.display_name,
                          predictor.config.gate or GateSpec(), review=review)


def write_cutout(out: Path, stem: str, path: str | os.PathLike[str], cut: Any, *,
                 background: tuple[int, int, int] | None = None, soft_edges: bool = False,
                 mask_only: bool = False) -> dict[str, Any]:
    """Write one photo's mask, and (unless ``mask_only``) what a person sees and the
    cut-out if accepted; return its ``results.jsonl`` row. Shared by the local path and
    ``--engine ray`` (where Ray actors call it)."""
    from seglab.data.images import write_image

    write_image(out / "masks" / f"{stem}.png", cut.mask * 255)
    if not mask_only:
        shown = cut.shown(background, soft_edges)
        if cut.decision.accepted:
            write_image(out / "cutouts" / f"{stem}.png", shown)
        write_image(out / "shown" / f"{stem}.png", shown)
    return {"image": str(path).rstrip("/").rsplit("/", 1)[-1], "path": str(path),
            "output": stem, **cut.decision.as_dict()}


def finish_cutouts(out: Path, log: Any, errors: list[FileError], kept: list[dict], model: str,
                   gate: GateSpec, *, review: bool = True) -> CutoutSummary:
    """``results.json``, ``results.csv``, the review sheet (of ``kept`` rows) and the gate
    histograms, from every row in the log (this run's and a resumed run's earlier ones)."""
    from seglab.data.files import atomic_write, write_text_atomic

    rows = list(log.rows())  # a few numbers per image: small even for 100,000 images
    summary = CutoutSummary(model=model, images=len(rows),
                            accepted=sum(r["accepted"] for r in rows), errors=errors,
                            gate=gate.model_dump())
    write_text_atomic(out / "results.json", summary.to_json())
    with atomic_write(out / "results.csv", "w") as f:
        writer = csv.DictWriter(f, ["image", "accepted", "confidence", "area_fraction",
                                    "reason"], extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    if review and kept:
        from seglab.cutout.sheet import gate_histograms, review_sheet

        review_sheet(kept, out / "review")
        gate_histograms(rows, out / "gate_report.png")
    return summary


def watch(predictor: Predictor, folder: str | os.PathLike[str], out: str | os.PathLike[str],
          *, interval: float = 1.0, stop: Callable[[], bool] | None = None,
          report: Callable[[str], None] = print, **options: Any) -> CutoutSummary | None:
    """Cut out images as they land in ``folder`` (recursively) until ``stop()`` is true or
    the user interrupts (Ctrl-C); outputs go to ``out`` as :func:`cutout_files` writes them.

    A file is taken once its size and modification time are the same on two polls
    ``interval`` seconds apart, so a photo still being copied in is not read half-written.
    Resumable: what ``out/results.jsonl`` already holds is skipped, so a watch restarted
    after a kill goes on where it stopped. Output names are the path inside ``folder``
    (folders joined by ``__``), fixed when a file arrives whatever lands after it.
    Returns the summary of everything processed so far (``None`` if nothing ever was).
    """
    from seglab.data.files import JsonLines
    from seglab.data.images import list_images

    # Polling rather than file-system events: it sees files on network shares and
    # synced folders, where inotify is silent, and a poll a second costs nothing.
    folder, out = Path(folder), Path(out)
    done = {Path(r["path"]) for r in JsonLines(out / "results.jsonl", resume=True).rows()}
    seen: dict[Path, tuple[int, float]] = {}
    summary = None
    options = {"review": False, "progress": False, **options}
    while True:
        ready = []
        for path in list_images(folder):
            if path in done or out in path.parents or path == out:
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # moved away between listing and stat
                continue
            state = (stat.st_size, stat.st_mtime)
            if seen.get(path) == state and stat.st_size > 0:
                ready.append(path)
            seen[path] = state
        if ready:
            names = {p: "__".join(p.relative_to(folder).with_suffix("").parts) for p in ready}
            summary = cutout_files(predictor, ready, out, resume=True, names=names, **options)
            done.update(ready)
            shown = {Path(e["image"]) for e in summary.errors}
            report(f"{len(ready)} new: {sum(p not in shown for p in ready)} done, "
                   f"{summary.accepted} of {summary.images} accepted so far")
        if stop is not None and stop():
            return summary
        time.sleep(interval)


def gate_report(predictor: Predictor, dataset: SegmentationDataset,
                out: str | os.PathLike[str], *, name: str, iou_good: float = 0.95,
                progress: bool = True) -> GateReport:
    """On labelled photos: IoU per image, accepted share, and precision against coverage.

    Precision is the share of accepted cut-outs whose IoU with the truth is at
    least ``iou_good``; moving the confidence threshold trades it against
    coverage (the share accepted), so a user can pick a threshold for a target
    precision. Writes ``gate_report.json``, ``precision_coverage.png`` and
    ``gate_report.png`` into ``out``.
    """
    from seglab.cutout.sheet import gate_histograms, plot_precision_coverage, precision_coverage
    from seglab.data.files import write_json
    from seglab.progress import bar as progress_bar

    out = Path(out)
    gate = predictor.config.gate or GateSpec()
    rows = []
    for i in progress_bar(range(len(dataset)), desc="gate report", unit="img",
                          disable=not progress):
        image, mask = dataset.load(i)
        cut = remove(image, predictor)
        rows.append({"image": dataset.items[i].id, "iou": round(iou(cut.mask, mask[..., 0]), 5),
                     **cut.decision.as_dict()})
    conf = np.array([r["confidence"] for r in rows])
    ious = np.array([r["iou"] for r in rows])
    area = np.array([r["area_fraction"] for r in rows])
    area_ok = (area >= gate.min_area_fraction) & (area <= gate.max_area_fraction)
    accepted = np.array([r["accepted"] for r in rows], bool)
    curve = precision_coverage(conf, ious, area_ok, iou_good)
    report = GateReport(
        data=name, images=len(rows), mean_iou=float(ious.mean()),
        median_iou=float(np.median(ious)), accepted_share=float(accepted.mean()),
        precision_of_accepted=float((ious[accepted] >= iou_good).mean())
        if accepted.any() else None,
        mean_iou_accepted=float(ious[accepted].mean()) if accepted.any() else None,
        iou_good=iou_good, gate=gate.model_dump(), curve=curve, results=rows)
    write_json(out / "gate_report.json", report.model_dump())
    plot_precision_coverage(curve, out / "precision_coverage.png",
                            f"{name}: precision vs coverage")
    gate_histograms(rows, out / "gate_report.png")
    return report

