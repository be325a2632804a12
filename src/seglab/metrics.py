"""Dice, the Severstal competition metric, IoU and image-level detection scores.

Pixel statistics come from ``segmentation_models_pytorch.metrics`` (``get_stats``,
``f1_score`` = Dice, ``iou_score``) and ROC-AUC from torchmetrics; only the exact
Dice from pixel counts that threshold tuning needs (``dice_from_counts``, vectorised
over a whole grid of thresholds at once) is written here.

The competition scores every (image, class) pair with Dice
``2|X∩Y| / (|X| + |Y|)``, defined as 1 when both masks are empty, and averages
over all pairs. The smoothed form ``(2|A∩B| + 1) / (|A| + |B| + 1)`` is the
mission's training metric; both are here, vectorised over a batch.
"""

from __future__ import annotations

import numpy as np
import segmentation_models_pytorch as smp
import torch


def dice_pairs(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray,
               smooth: float = 0.0) -> torch.Tensor:
    """Dice of every (image, class) pair of ``(N, C, H, W)`` binary masks -> ``(N, C)``.

    ``smooth=0`` is the competition's exact Dice (empty vs empty = 1, empty vs
    non-empty = 0); ``smooth=1`` is the mission's smoothed coefficient.
    """
    tp, fp, fn, tn = _stats(pred, truth)
    if smooth > 0:
        return ((2 * tp + smooth) / (2 * tp + fp + fn + smooth)).float()
    return smp.metrics.f1_score(tp, fp, fn, tn, reduction="none", zero_division=1.0).float()


def overlap_counts(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union pixel counts per (image, class) of ``(N, C, ...)`` binary
    masks: summed over a dataset they give the pooled IoU of segmentation benchmarks."""
    tp, fp, fn, _ = _stats(pred, truth)
    return tp, tp + fp + fn


def _stats(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray
           ) -> tuple[torch.Tensor, ...]:
    """True/false positives/negatives of ``(N, C, ...)`` binary masks per (image, class)."""
    p = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred)
    t = torch.as_tensor(np.asarray(truth) if not torch.is_tensor(truth) else truth)
    return smp.metrics.get_stats(p.bool().long(), t.bool().long(), mode="multilabel")


def dice_from_counts(inter: np.ndarray, pred_area: np.ndarray, truth_area: np.ndarray
                     ) -> np.ndarray:
    """Exact Dice from pixel counts (broadcasting); 1 where both areas are 0."""
    total = pred_area + truth_area
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)


def detection_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of binary image-level decisions (1 = defect present).

    Counts from torchmetrics' ``binary_stat_scores``; the empty cases follow the
    detection convention (no defect anywhere and none claimed: precision 1; nothing
    to find: recall 1), which torchmetrics' own precision (0 there) does not.
    """
    from torchmetrics.functional.classification import binary_stat_scores

    pred_t = torch.as_tensor(np.asarray(pred, bool).ravel(), dtype=torch.long)
    truth_t = torch.as_tensor(np.asarray(truth, bool).ravel(), dtype=torch.long)
    tp, fp, tn, fn, _ = (int(v) for v in binary_stat_scores(pred_t, truth_t)) if len(
        pred_t) else (0, 0, 0, 0, 0)
    precision = tp / (tp + fp) if tp + fp else (1.0 if not tp + fn else 0.0)
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "tn": tn}


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the ROC curve; ``None`` when only one class is present in ``truth``."""
    truth = np.asarray(truth, bool)
    if truth.all() or not truth.any():
        return None
    from torchmetrics.functional.classification import binary_auroc

    return float(binary_auroc(torch.as_tensor(scores, dtype=torch.float32),
                              torch.as_tensor(truth, dtype=torch.long)))


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice between two sets of binary masks over all pixels (1.0 when both are empty)."""
    stats = _stats(np.asarray(a).reshape(1, 1, -1), np.asarray(b).reshape(1, 1, -1))
    return float(smp.metrics.f1_score(*stats, reduction="none", zero_division=1.0)[0, 0])


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two binary masks (1.0 when both are empty)."""
    stats = _stats(np.asarray(pred).reshape(1, 1, -1), np.asarray(truth).reshape(1, 1, -1))
    return float(smp.metrics.iou_score(*stats, reduction="none", zero_division=1.0)[0, 0])


def agreement(masks: np.ndarray, reference: np.ndarray) -> float:
    """How far a backend's ``(N, C, H, W)`` masks agree with the reference's: the worse of
    the Dice over all pixels and the mean per-image Dice.

    Pooled Dice alone lets a large mask hide a small one that a backend erased;
    the per-image mean alone lets empty images pad the score. Both must hold.
    """
    per_image = float(np.mean([mask_dice(m, r) for m, r in zip(masks, reference, strict=True)]))
    return min(mask_dice(masks, reference), per_image)
