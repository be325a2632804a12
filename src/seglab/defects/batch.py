"""``seglab predict``: a folder of strips to masks, overlays and a Kaggle-style
submission CSV; resumable, and one bad file is reported and skipped.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seglab.infer.predictor import Prediction, Predictor
from seglab.results import FileError, Result

if TYPE_CHECKING:
    from seglab.data.files import JsonLines


class PredictSummary(Result):
    """What ``predict_files`` did: images predicted, how many called defective, the files
    that could not be read (reported and skipped), and the per-image results file."""

    model: str
    images: int
    defective: int
    errors: list[FileError]
    results: str = "summary.jsonl"


def write_prediction(out: Path, stem: str, path: str | os.PathLike[str], image: np.ndarray,
                     pred: Prediction, *, write_masks: bool = True, write_overlays: bool = True
                     ) -> dict[str, Any]:
    """Write one image's masks and overlay; return its ``summary.jsonl`` row.

    Shared by the local path and ``--engine ray`` (where Ray actors call it), so both
    write the same files and rows."""
    from seglab.data import rle
    from seglab.data.images import write_image
    from seglab.infer.overlay import overlay

    names = pred.class_names
    codes = {}
    for c, mask in enumerate(pred.masks):
        if mask.any():
            codes[str(c + 1)] = rle.encode(mask)
            if write_masks:
                write_image(out / "masks" / f"{stem}_{names[c]}.png", mask * 255)
    if write_overlays:
        write_image(out / "overlays" / f"{stem}.png", overlay(image, pred.masks, names=names))
    return {
        "image": _name(path), "path": str(path), "width": image.shape[1],
        "height": image.shape[0], "defective": bool(pred.classes_found),
        "defect_score": round(pred.defect_score, 4),
        "classes_found": pred.classes_found, "area": pred.areas,
        "class_probability": {n: round(float(p), 4)
                              for n, p in zip(names, pred.class_probs, strict=True)},
        "max_pixel_probability": {n: round(float(p.max()), 4)
                                  for n, p in zip(names, pred.probs, strict=True)},
        "rle": codes, "decided_by": pred.decided_by,
    }


def _name(path: str | os.PathLike[str]) -> str:
    """The file name of a path or URL (``s3://b/x/strip.jpg`` -> ``strip.jpg``)."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def describe(row: dict[str, Any]) -> str:
    """One progress line per image: what was found and by which rule, or why it is normal."""
    found = [d for d in row["decided_by"] if ": found" in d]
    return (f"{row['image']}: defective: {'; '.join(found)}" if found else
            f"{row['image']}: normal (no class passed its rules; highest "
            f"image-level probability {row['defect_score']:.2f})")


def predict_files(predictor: Predictor, inputs: Sequence[str | os.PathLike[str]],
                  out: str | os.PathLike[str], *, layout: str = "split", batch_size: int = 8,
                  write_masks: bool = True, write_overlays: bool = True,
                  progress: bool = True, workers: int = 0, resume: bool = False) -> PredictSummary:
    """Predict files, folders or globs and write every output at the original resolution.

    Streams: images are decoded (in ``workers`` processes when > 0) while the model
    runs, and each batch's outputs are written before the next is read, so memory
    stays bounded for any number of images. Writes ``masks/<image>_<class>.png``,
    ``overlays/<image>.png``, one line per image in ``summary.jsonl``, then
    ``submission.csv`` (Severstal layout ``split`` or ``combined``), ``summary.csv``
    and ``summary.json`` (counts and errors). A file that cannot be read is reported
    in ``errors`` and skipped. ``resume=True`` skips images already in
    ``summary.jsonl`` (after a kill, say). ``seglab.engines.raydata`` runs the same
    over a Ray cluster.
    """
    from seglab.data.files import JsonLines, output_names
    from seglab.data.images import image_batches, list_images
    from seglab.progress import bar as progress_bar

    out = Path(out)
    log = JsonLines(out / "summary.jsonl", resume=resume)
    every = list_images(*inputs)
    stems = output_names(every)
    paths = log.pending(every)
    errors: list[FileError] = []
    bar = progress_bar(total=len(paths), desc="predict", unit="img", disable=not progress)
    skipped = 0
    try:
        for good in image_batches(paths, batch_size, errors, workers=workers,
                                  report=lambda line: bar.write(line, file=sys.stderr)):
            preds = predictor.predict_batch([img for _, img in good]) if good else []
            rows = []
            for (path, image), pred in zip(good, preds, strict=True):
                rows.append(write_prediction(out, stems[path], path, image, pred,
                                             write_masks=write_masks,
                                             write_overlays=write_overlays))
                if progress:
                    bar.write(describe(rows[-1]))
            log.append(rows)  # after the row's files: a listed image is complete
            bar.update(len(good) + len(errors) - skipped)
            skipped = len(errors)
    finally:
        bar.close()
        log.close()
    return finish_predictions(out, log, predictor.class_names, layout, errors,
                              predictor.config.display_name)


def finish_predictions(out: Path, log: JsonLines, names: Sequence[str], layout: str,
                       errors: list[FileError], model: str) -> PredictSummary:
    """``submission.csv``, ``summary.csv`` and ``summary.json`` from every row in the log
    (this run's and a resumed run's earlier ones), in the log's order."""
    import csv

    from seglab.data import rle
    from seglab.data.files import atomic_write, write_text_atomic

    images = defective = 0
    with atomic_write(out / "submission.csv", "w") as sub, \
            atomic_write(out / "summary.csv", "w") as table:
        rle.write_header(sub, layout)  # type: ignore[arg-type]
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["image", "defective", "defect_score", "classes_found",
                         *[f"area_{n}" for n in names], *[f"prob_{n}" for n in names]])
        for r in log.rows():
            images += 1
            defective += r["defective"]
            rle.write_rows(sub, r["image"], {int(k): v for k, v in r["rle"].items()},
                           layout=layout, num_classes=len(names))  # type: ignore[arg-type]
            writer.writerow([r["image"], int(r["defective"]), r["defect_score"],
                             " ".join(r["classes_found"]), *[r["area"][n] for n in names],
                             *[r["class_probability"][n] for n in names]])
    summary = PredictSummary(model=model, images=images, defective=defective, errors=errors)
    write_text_atomic(out / "summary.json", summary.to_json())
    return summary
