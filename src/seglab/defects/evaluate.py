"""Evaluation and tuning on labelled data.

One pass over the data collects, per image and class, the pixel counts every
candidate threshold would give (area and overlap with the truth), the truth
area and the image-level probability. From these counts the competition metric
for any (threshold, minimum area, classifier threshold) is exact and cheap, so
tuning searches the whole grid without running the model again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from seglab.data.datasets import SegmentationDataset
from seglab.infer.postprocess import binarize, per_class
from seglab.infer.predictor import Predictor
from seglab.metrics import detection_scores, dice_from_counts, dice_pairs, roc_auc
from seglab.progress import bar as progress_bar
from seglab.recipes import PostprocessSpec, TuneSpec
from seglab.results import ClassMetrics, ClassTuning, DefectMetrics, Detection, FactorRow

if TYPE_CHECKING:
    import albumentations as A

    from seglab.models import folder as modelfolder


@dataclass
class Collected:
    """Counts gathered in one pass; enough to score or tune any post-processing."""

    ids: list[str]
    class_names: list[str]
    thresholds: np.ndarray
    pred_area: np.ndarray  # (T, N, C) pixels >= each threshold
    inter: np.ndarray  # (T, N, C) of those, pixels inside the truth
    truth_area: np.ndarray  # (N, C)
    class_probs: np.ndarray  # (N, C)
    dice: np.ndarray  # (N, C) with the predictor's own post-processing
    pred_present: np.ndarray  # (N, C) a mask survives post-processing
    pixels: np.ndarray  # (N,) image size in pixels
    skipped: list[str] = field(default_factory=list)


def collect(predictor: Predictor, dataset: SegmentationDataset, grid: TuneSpec | None = None,
            batch_size: int = 8, progress: bool = True,
            transform: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
            | None = None) -> Collected:
    """Run the model over a labelled dataset (raw images at their own size).

    ``transform`` perturbs each (image, mask) pair first: used to measure the
    model card's factors (lighting, angle, distance, camera).
    """
    grid = grid or predictor.config.tune
    thresholds = np.asarray(sorted(set(grid.thresholds)
                                   | set(per_class(predictor.config.postprocess.threshold,
                                                   1).tolist())), dtype=np.float32)
    rows: dict[str, list] = {k: [] for k in ("area", "inter", "truth", "cls", "dice", "present",
                                             "pixels", "ids")}
    skipped: list[str] = []
    n = len(dataset)
    bar = progress_bar(total=n, desc="evaluate", unit="img", disable=not progress)
    for start in range(0, n, batch_size):
        images, masks, ids = [], [], []
        for i in range(start, min(start + batch_size, n)):
            try:
                image, mask = dataset.load(i)
            except ValueError as exc:  # one bad file is reported, not the end of the run
                skipped.append(f"{dataset.items[i].id}: {exc}")
                continue
            if transform is not None:
                image, mask = transform(image, mask)
            images.append(image)
            masks.append(mask.transpose(2, 0, 1).astype(bool))
            ids.append(dataset.items[i].id)
        for (probs, cls), truth, image_id in zip(predictor.probabilities(images), masks, ids,
                                                 strict=True):
            above = probs[None] >= thresholds[:, None, None, None]  # (T, C, H, W)
            rows["area"].append(above.sum(axis=(2, 3)))
            rows["inter"].append((above & truth[None]).sum(axis=(2, 3)))
            rows["truth"].append(truth.sum(axis=(1, 2)))
            rows["cls"].append(cls)
            final = binarize(probs, cls, predictor.config.postprocess)
            rows["dice"].append(dice_pairs(final[None], truth[None]).numpy()[0])
            rows["present"].append(final.reshape(len(final), -1).any(axis=1))
            rows["pixels"].append(truth.shape[1] * truth.shape[2])
            rows["ids"].append(image_id)
        bar.update(min(batch_size, n - start))
    bar.close()
    if not rows["ids"]:
        raise ValueError("no image of the dataset could be evaluated: " + "; ".join(skipped[:3]))
    return Collected(
        ids=rows["ids"], class_names=list(dataset.class_names), thresholds=thresholds,
        pred_area=np.stack(rows["area"], axis=1), inter=np.stack(rows["inter"], axis=1),
        truth_area=np.stack(rows["truth"]), class_probs=np.stack(rows["cls"]),
        dice=np.stack(rows["dice"]), pred_present=np.stack(rows["present"]),
        pixels=np.asarray(rows["pixels"]), skipped=skipped)


def tune(col: Collected, grid: TuneSpec, base: PostprocessSpec
         ) -> tuple[PostprocessSpec, dict[str, ClassTuning]]:
    """Choose per class the threshold, minimum area and classifier threshold maximising mean Dice.

    Classes are independent under the competition metric (a mean over image x
    class pairs), so each class is searched on its own. Ties keep the lowest
    threshold, smallest area and lowest classifier threshold (the least
    aggressive filtering). Returns the tuned spec and a report.
    """
    num_classes = col.truth_area.shape[1]
    t_idx = [int(np.argmin(np.abs(col.thresholds - t))) for t in grid.thresholds]
    areas = np.asarray(sorted(set(grid.min_areas)), dtype=np.float64)
    ks = np.asarray(sorted(set(grid.classifier_thresholds)), dtype=np.float64)
    best_t: list[float] = []
    best_a: list[int] = []
    best_k: list[float] = []
    report: dict[str, ClassTuning] = {}
    for c in range(num_classes):
        g = col.truth_area[:, c].astype(np.float64)  # (N,)
        pa = col.pred_area[t_idx, :, c].astype(np.float64)  # (T, N)
        it = col.inter[t_idx, :, c].astype(np.float64)
        kept_area = pa[:, None, None, :] >= np.maximum(areas, 1)[None, :, None, None]
        kept_cls = col.class_probs[None, None, None, :, c] >= ks[None, None, :, None]
        keep = kept_area & kept_cls  # (T, A, K, N)
        dice = np.where(keep, dice_from_counts(it, pa, g)[:, None, None, :],
                        (g == 0).astype(np.float64))
        score = dice.mean(axis=3)  # (T, A, K)
        ti, ai, ki = np.unravel_index(int(np.argmax(score)), score.shape)
        best_t.append(float(col.thresholds[t_idx[ti]]))
        best_a.append(int(areas[ai]))
        best_k.append(float(ks[ki]))
        report[col.class_names[c]] = ClassTuning(
            threshold=best_t[-1], min_area=best_a[-1], classifier_threshold=best_k[-1],
            mean_dice=round(float(score[ti, ai, ki]), 5),
            mean_dice_untuned=round(float(col.dice[:, c].mean()), 5))
    tuned = base.model_copy(update={"threshold": best_t, "min_area": best_a,
                                    "classifier_threshold": best_k})
    return tuned, report


def score(col: Collected, spec: PostprocessSpec | None = None) -> DefectMetrics:
    """Every metric the model card and ``metrics.json`` report.

    With ``spec`` the masks are re-scored from the counts (no cleaning); without
    it the predictor's own post-processing is scored.
    """
    if spec is not None:
        dice, present = _rescore(col, spec)
    else:
        dice, present = col.dice, col.pred_present
    truth_present = col.truth_area > 0
    names = col.class_names
    cls_thresholds = per_class(spec.classifier_threshold if spec else 0.5, len(names))
    iou = pooled_iou(col, spec) if spec is not None else {}
    per_class_out = {}
    for c, name in enumerate(names):
        has = truth_present[:, c]
        per_class_out[name] = ClassMetrics(
            dice=float(dice[:, c].mean()),
            dice_defective=float(dice[has, c].mean()) if has.any() else None,
            images_with_class=int(has.sum()),
            detection=Detection(**detection_scores(present[:, c], has)),
            classifier=Detection(**detection_scores(col.class_probs[:, c] >= cls_thresholds[c],
                                                    has),
                                 roc_auc=roc_auc(col.class_probs[:, c], has)),
            iou=iou.get(name))
    any_truth = truth_present.any(axis=1)
    known = [v for v in iou.values() if v is not None]
    return DefectMetrics(
        images=len(col.ids),
        pairs=int(dice.size),
        mean_iou=float(np.mean(known)) if known else None,
        mean_dice=float(dice.mean()),
        mean_dice_defective=float(dice[truth_present].mean()) if truth_present.any() else None,
        all_empty_mean_dice=float((~truth_present).mean()),
        defective_images=int(any_truth.sum()),
        per_class=per_class_out,
        defect_vs_no_defect=Detection(**detection_scores(present.any(axis=1), any_truth),
                                      roc_auc=roc_auc(col.class_probs.max(axis=1), any_truth)),
        skipped=col.skipped)


def pooled_iou(col: Collected, spec: PostprocessSpec) -> dict[str, float | None]:
    """IoU per class over all pixels of the data (segmentation benchmarks' mIoU terms):
    intersection and union summed over every image, masks post-processed by ``spec``
    (no cleaning); ``None`` for a class absent from both truth and prediction."""
    num_classes = col.truth_area.shape[1]
    th = per_class(spec.threshold, num_classes)
    areas = per_class(spec.min_area, num_classes)
    ks = per_class(spec.classifier_threshold, num_classes)
    out: dict[str, float | None] = {}
    for c, name in enumerate(col.class_names):
        t = int(np.argmin(np.abs(col.thresholds - th[c])))
        pa, it = col.pred_area[t, :, c].astype(np.float64), col.inter[t, :, c].astype(np.float64)
        keep = (pa >= max(areas[c], 1)) & (col.class_probs[:, c] >= ks[c])
        inter = float(it[keep].sum())
        union = float(pa[keep].sum() + col.truth_area[:, c].sum() - inter)
        out[name] = inter / union if union > 0 else None
    return out


def _rescore(col: Collected, spec: PostprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    num_classes = col.truth_area.shape[1]
    th = per_class(spec.threshold, num_classes)
    areas = per_class(spec.min_area, num_classes)
    ks = per_class(spec.classifier_threshold, num_classes)
    dice = np.empty_like(col.dice, dtype=np.float64)
    present = np.empty_like(col.pred_present)
    for c in range(num_classes):
        t = int(np.argmin(np.abs(col.thresholds - th[c])))
        pa, it = col.pred_area[t, :, c], col.inter[t, :, c]
        keep = (pa >= max(areas[c], 1)) & (col.class_probs[:, c] >= ks[c])
        g = col.truth_area[:, c]
        dice[:, c] = np.where(keep, dice_from_counts(it, pa, g), (g == 0).astype(float))
        present[:, c] = keep
    return dice, present


def worst_images(predictor: Predictor, dataset: SegmentationDataset, col: Collected,
                 spec: PostprocessSpec, count: int = 6) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Truth and prediction overlays of the images with the lowest mean Dice."""
    from seglab.infer.overlay import overlay

    dice, _ = _rescore(col, spec)
    order = np.argsort(dice.mean(axis=1), kind="stable")[:count]
    index = {item.id: i for i, item in enumerate(dataset.items)}
    rows = []
    for n in order:
        image_id = col.ids[n]
        image, mask = dataset.load(index[image_id])
        probs, cls = predictor.probabilities([image])[0]
        pred = binarize(probs, cls, spec)
        rows.append((f"{image_id} (Dice {dice[n].mean():.3f})",
                     overlay(image, mask.transpose(2, 0, 1)), overlay(image, pred)))
    return rows


def measure_factors(predictor: Predictor, dataset: SegmentationDataset, spec: PostprocessSpec,
                    progress: bool = True) -> list[FactorRow]:
    """Re-measure the metric under each controlled change of lighting, angle, distance, camera."""
    from seglab.defects.plots import factor_transforms

    rows = []
    for factor, changes in factor_transforms().items():
        for change, transform in changes:
            def apply(image: np.ndarray, mask: np.ndarray, t: A.BasicTransform = transform
                      ) -> tuple[np.ndarray, np.ndarray]:
                res = t(image=image, mask=mask)
                return res["image"], res["mask"]

            col = collect(predictor, dataset, progress=False, transform=apply)
            m = score(col, spec)
            rows.append(FactorRow(factor=factor, change=change, mean_dice=m.mean_dice,
                                  mean_dice_defective=m.mean_dice_defective))
            if progress:
                print(f"  factor {factor:12s} {change:20s} mean Dice {m['mean_dice']:.4f}")
    return rows


def open_for_model(config: modelfolder.ModelConfig, root: str, fmt: str | None = None,
                   ids: list[str] | None = None) -> SegmentationDataset:
    """The labelled dataset at ``root``, read the way the model was trained (or as ``fmt``)."""
    from seglab.data.datasets import open_dataset
    from seglab.recipes import DataSpec, Recipe

    data = dict(config.training.get("recipe_data") or {"format": fmt or "severstal"})
    if fmt:
        data["format"] = fmt
    recipe = Recipe(name=config.recipe, task=config.task, model=config.model,
                    data=DataSpec.model_validate(data), postprocess=config.postprocess)
    return open_dataset(recipe, root, ids)


def document(model_dir: str, dataset: SegmentationDataset, *, dataset_name: str,
             tune_first: bool = True, factors: bool = True, tta: bool = False,
             progress: bool = True, out_dir: str | None = None,
             update_model: bool = True) -> DefectMetrics:
    """Tune (optionally), evaluate and plot; with ``update_model`` also rewrite the model card.

    Writes ``metrics.json``, ``dice_per_class.png``, ``pr_curves.png``,
    ``worst_images.png`` and ``factors.png`` (when measured) into ``out_dir``
    (default: the model folder). With ``update_model`` the tuned
    post-processing goes into ``config.json`` and the card into ``README.md``.
    """
    from pathlib import Path

    from seglab.data.files import write_json
    from seglab.defects.card import model_card
    from seglab.defects.plots import image_grid, plot_dice_bars, plot_factors, plot_pr_curves
    from seglab.infer.predictor import load_model
    from seglab.models import folder as modelfolder

    folder = Path(model_dir)
    out = Path(out_dir) if out_dir else folder
    out.mkdir(parents=True, exist_ok=True)
    predictor = load_model(folder)
    predictor.tta = tta
    config = predictor.config
    col = collect(predictor, dataset, progress=progress)
    untuned = score(col)
    tuning: dict[str, ClassTuning] = {}
    if tune_first:
        spec, tuning = tune(col, config.tune, config.postprocess)
        config.postprocess = spec
        predictor.config = config
    factor_rows = measure_factors(predictor, dataset, config.postprocess, progress) \
        if factors else []
    metrics = score(col, config.postprocess).model_copy(update={
        "dataset": dataset_name, "tta": tta, "untuned_mean_dice": untuned.mean_dice,
        "tuning": tuning, "factors": factor_rows})
    names = config.class_names
    plot_dice_bars(metrics, out / "dice_per_class.png")
    plot_pr_curves(col.class_probs, col.truth_area > 0, names, out / "pr_curves.png")
    image_grid(worst_images(predictor, dataset, col, config.postprocess), out /
               "worst_images.png", names, "Lowest-Dice images: truth (left) and prediction")
    if factor_rows:
        plot_factors(factor_rows, metrics["mean_dice"], out / "factors.png")
    write_json(out / "metrics.json", metrics)
    if not update_model:
        return metrics
    config.metrics = {k: metrics[k] for k in ("mean_dice", "mean_dice_defective",
                                              "all_empty_mean_dice", "images", "dataset")}
    modelfolder.update(folder, config=config,
                       card=model_card(config, metrics, factor_rows, folder.name))
    return metrics


def summary_line(metrics: DefectMetrics) -> str:
    """A defect evaluation in one line for a terminal."""
    return (f"mean Dice {metrics['mean_dice']:.4f} (all-empty "
            f"{metrics['all_empty_mean_dice']:.4f}), Dice on defective pairs "
            f"{metrics['mean_dice_defective'] or 0:.4f}, images {metrics['images']}")
