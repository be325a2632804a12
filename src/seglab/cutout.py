"""Background removal: probability map -> threshold -> cleaning -> gate -> what a person sees.

``remove(image)`` mirrors ``rembg.remove``: one image in (the zoo's cut-out
model by default), one :class:`Cutout` out. ``cutout_files`` runs folders and
writes the cut-outs, masks, a results table, the review sheet and the gate report.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seglab.gating import Decision, decide
from seglab.modelfolder import ModelConfig
from seglab.postprocess import clean, per_class
from seglab.predict import Predictor
from seglab.recipes import CleaningSpec, GateSpec


@dataclass
class Cutout:
    image: np.ndarray  # the photo (H, W, 3)
    probs: np.ndarray  # (H, W) foreground probability
    raw_mask: np.ndarray  # thresholded, (H, W) 0/1
    mask: np.ndarray  # cleaned, (H, W) 0/1
    decision: Decision

    def rgba(self, soft_edges: bool = False) -> np.ndarray:
        """The cut-out with a transparent background (soft edges follow the probabilities)."""
        if soft_edges:
            band = cv2.dilate(self.mask, np.ones((5, 5), np.uint8))
            alpha = np.clip(self.probs, 0, 1) * band
            alpha = np.maximum(alpha, self.mask.astype(np.float32))
            alpha8 = (alpha * 255 + 0.5).astype(np.uint8)
        else:  # the mask is 0/1: no float image needed
            alpha8 = self.mask.astype(np.uint8) * 255
        return np.dstack([self.image, alpha8])

    def on_colour(self, colour: tuple[int, int, int], soft_edges: bool = False) -> np.ndarray:
        rgba = self.rgba(soft_edges).astype(np.float32)
        a = rgba[..., 3:] / 255
        return (rgba[..., :3] * a + np.asarray(colour, np.float32) * (1 - a) + 0.5).astype(
            np.uint8)

    def shown(self, colour: tuple[int, int, int] | None = None, soft_edges: bool = False
              ) -> np.ndarray:
        """What a person is shown: the cut-out when accepted, else the original photo."""
        if not self.decision.accepted:
            return self.image
        return self.rgba(soft_edges) if colour is None else self.on_colour(colour, soft_edges)


def judge(probs: np.ndarray, config: ModelConfig) -> tuple[np.ndarray, np.ndarray, Decision]:
    """Threshold, clean and gate one ``(H, W)`` probability map as the model's config says.

    Returns the raw mask, the cleaned mask and the gate's decision; ``export``
    uses the same function to check that a backend leaves the verdict unchanged.
    """
    gate = config.gate or GateSpec()
    cleaning = config.postprocess.cleaning or CleaningSpec()
    threshold = float(per_class(config.postprocess.threshold, 1)[0])
    raw = (probs >= threshold).view(np.uint8)
    mask = clean(raw, cleaning)
    return raw, mask, decide(probs, mask, gate)


_LOADED: dict[str, Predictor] = {}
"""Models ``remove`` has loaded by name, kept for the next call (like rembg's sessions)."""


def remove(image: np.ndarray | str | os.PathLike[str],
           model: Predictor | str | os.PathLike[str] | None = None) -> Cutout:
    """Cut the foreground out of one RGB image (array or file) and decide whether to show it.

    ``model`` is a loaded :class:`Predictor`, a model folder or a zoo name; the
    default is the zoo's ``jewellery-cutout``, loaded once and kept.
    """
    from seglab import zoo
    from seglab.io import read_image

    if not isinstance(image, np.ndarray):
        image = read_image(image)
    if model is None or isinstance(model, str | os.PathLike):
        key = str(model or zoo.DEFAULT_CUTOUT)
        if key not in _LOADED:
            from seglab.predict import load_model

            _LOADED[key] = load_model(key, backend="auto")
        model = _LOADED[key]
    return remove_batch(model, [image])[0]


def remove_batch(predictor: Predictor, images: Sequence[np.ndarray]) -> list[Cutout]:
    out = []
    for image, (probs, _) in zip(images, predictor.probabilities(list(images)), strict=True):
        out.append(Cutout(image, probs[0], *judge(probs[0], predictor.config)))
    return out


def parse_colour(text: str | None) -> tuple[int, int, int] | None:
    """'#ffffff', 'ffffff' or '255,255,255' -> (r, g, b)."""
    if not text:
        return None
    from seglab.errors import SeglabError

    value = text.strip().lstrip("#")
    try:
        if "," in value:
            parts = tuple(int(v) for v in value.split(","))
        else:
            parts = tuple(int(value[i:i + 2], 16) for i in (0, 2, 4)) if len(value) == 6 else ()
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(0 <= v <= 255 for v in parts):
        raise SeglabError(f"colour {text!r} must look like #rrggbb or r,g,b")
    return parts  # type: ignore[return-value]


def cutout_files(predictor: Predictor, inputs: Sequence[str | os.PathLike[str]],
                 out: str | os.PathLike[str], *, background: tuple[int, int, int] | None = None,
                 soft_edges: bool = False, mask_only: bool = False, batch_size: int = 4,
                 review: bool = True, progress: bool = True, workers: int = 0,
                 resume: bool = False, review_limit: int = 400) -> dict:
    """Cut out every image; write ``shown/``, ``cutouts/``, ``masks/``, ``results.*``.

    ``shown/<name>.png`` is what a person sees (the cut-out if accepted, else the
    original). Streams like :func:`seglab.predict.predict_files`: one line per
    image in ``results.jsonl`` as it is done (``resume=True`` skips those), then
    ``results.csv`` and ``results.json``. The review sheet shows the first
    ``review_limit`` images of this run (its thumbnails are kept in memory).
    Unreadable files are reported in ``errors`` and skipped.
    """
    from tqdm import tqdm

    from seglab.io import (
        JsonLines,
        atomic_write,
        image_batches,
        list_images,
        output_names,
        write_image,
        write_text_atomic,
    )

    out = Path(out)
    log = JsonLines(out / "results.jsonl", resume=resume)
    every = list_images(*inputs)
    stems = output_names(every)
    paths = log.pending(every)
    errors, kept = [], []
    bar = tqdm(total=len(paths), desc="cutout", unit="img", disable=not progress)
    skipped = 0
    try:
        for good in image_batches(paths, batch_size, errors, workers=workers,
                                  report=bar.write):
            cuts = remove_batch(predictor, [img for _, img in good]) if good else []
            rows = []
            for (path, _), cut in zip(good, cuts, strict=True):
                stem = stems[path]
                write_image(out / "masks" / f"{stem}.png", cut.mask * 255)
                if not mask_only:
                    cut_img = cut.rgba(soft_edges) if background is None else cut.on_colour(
                        background, soft_edges)
                    write_image(out / "cutouts" / f"{stem}.png", cut_img)
                    write_image(out / "shown" / f"{stem}.png",
                                cut.shown(background, soft_edges))
                rows.append({"image": path.name, "path": str(path), "output": stem,
                             **cut.decision.as_dict()})
                if review and len(kept) < review_limit:
                    from seglab.report import review_row

                    kept.append(review_row(path.name, cut))
            log.append(rows)
            bar.update(len(good) + len(errors) - skipped)
            skipped = len(errors)
    finally:
        bar.close()
        log.close()
    rows = list(log.rows())  # a few numbers per image: small even for 100,000 images
    summary = {"model": predictor.config.display_name, "images": len(rows),
               "accepted": sum(r["accepted"] for r in rows), "errors": errors,
               "results": "results.jsonl",
               "gate": (predictor.config.gate or GateSpec()).model_dump()}
    write_text_atomic(out / "results.json", json.dumps(summary, indent=2) + "\n")
    with atomic_write(out / "results.csv", "w") as f:
        writer = csv.DictWriter(f, ["image", "accepted", "confidence", "area_fraction",
                                    "reason"], extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    if review and kept:
        from seglab.report import gate_histograms, review_sheet

        review_sheet(kept, out / "review")
        gate_histograms(rows, out / "gate_report.png")
    return summary


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred.astype(bool), truth.astype(bool)
    union = int((p | t).sum())
    return 1.0 if union == 0 else float((p & t).sum()) / union


def gate_report(predictor: Predictor, dataset, out: str | os.PathLike[str], *, name: str,
                iou_good: float = 0.95, progress: bool = True) -> dict:
    """On labelled photos: IoU per image, accepted share, and precision against coverage.

    Precision is the share of accepted cut-outs whose IoU with the truth is at
    least ``iou_good``; moving the confidence threshold trades it against
    coverage (the share accepted), so a user can pick a threshold for a target
    precision. Writes ``gate_report.json``, ``precision_coverage.png`` and
    ``gate_report.png`` into ``out``.
    """
    from tqdm import tqdm

    from seglab.report import (
        gate_histograms,
        plot_precision_coverage,
        precision_coverage,
        write_json,
    )

    out = Path(out)
    gate = predictor.config.gate or GateSpec()
    rows = []
    for i in tqdm(range(len(dataset)), desc="gate report", unit="img", disable=not progress):
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
    report = {
        "data": name, "images": len(rows), "mean_iou": float(ious.mean()),
        "median_iou": float(np.median(ious)),
        "accepted_share": float(accepted.mean()),
        "precision_of_accepted": float((ious[accepted] >= iou_good).mean())
        if accepted.any() else None,
        "mean_iou_accepted": float(ious[accepted].mean()) if accepted.any() else None,
        "iou_good": iou_good, "gate": gate.model_dump(), "curve": curve, "results": rows,
    }
    write_json(out / "gate_report.json", report)
    plot_precision_coverage(curve, out / "precision_coverage.png",
                            f"{name}: precision vs coverage")
    gate_histograms(rows, out / "gate_report.png")
    return report
