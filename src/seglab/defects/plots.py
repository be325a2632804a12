"""The defect model card's pictures: Dice per class, PR curves, worst images
and the factor study (matplotlib, Agg backend).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import cv2
import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from seglab.data.figures import write_figure
from seglab.infer.overlay import color_of

matplotlib.use("Agg")


def plot_dice_bars(metrics: dict, path: Path) -> Path:
    names = list(metrics["per_class"])
    all_pairs = [metrics["per_class"][n]["dice"] for n in names]
    defective = [metrics["per_class"][n]["dice_defective"] or 0.0 for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(names) + 2), 3.6))
    ax.bar(x - 0.2, all_pairs, 0.4, label="all images", color="#4477aa")
    ax.bar(x + 0.2, defective, 0.4, label="images with the class", color="#ee6677")
    ax.axhline(metrics["mean_dice"], color="#4477aa", ls="--", lw=1,
               label=f"mean Dice {metrics['mean_dice']:.3f}")
    ax.axhline(metrics["all_empty_mean_dice"], color="grey", ls=":", lw=1,
               label=f"all-empty {metrics['all_empty_mean_dice']:.3f}")
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Dice")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Dice per class")
    return write_figure(fig, path)


def plot_pr_curves(class_probs: np.ndarray, truth: np.ndarray, names: Sequence[str],
                   path: Path) -> Path:
    """Image-level precision-recall curve of each class's defect probability (torchmetrics)."""
    import torch
    from torchmetrics.functional.classification import binary_precision_recall_curve

    fig, ax = plt.subplots(figsize=(5, 4))
    for c, name in enumerate(names):
        has = truth[:, c].astype(bool)
        if not has.any() or has.all():
            continue
        precision, recall, _ = binary_precision_recall_curve(
            torch.as_tensor(class_probs[:, c], dtype=torch.float32),
            torch.as_tensor(has, dtype=torch.long))
        ax.plot(recall.numpy(), precision.numpy(), label=name,
                color=np.asarray(color_of(c)) / 255)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_title("Image-level precision-recall per class")
    ax.legend(fontsize=7)
    return write_figure(fig, path)


def image_grid(rows: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path,
               names: Sequence[str], title: str) -> Path:
    """Rows of (label, truth overlay, prediction overlay) side by side, with a legend."""
    aspect = rows[0][1].shape[0] / rows[0][1].shape[1] if rows else 1.0
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, (5 * aspect + 0.35) * len(rows) + 0.8),
                             squeeze=False)
    for r, (label, truth, pred) in enumerate(rows):
        for col, (img, head) in enumerate(((truth, "truth"), (pred, "prediction"))):
            ax = axes[r, col]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label} - {head}", fontsize=7)
    handles = [matplotlib.patches.Patch(color=np.asarray(color_of(i)) / 255, label=n)
               for i, n in enumerate(names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(names), 6), fontsize=7)
    fig.suptitle(title, fontsize=9)
    return write_figure(fig, path)


def factor_transforms(seed: int = 0) -> dict[str, list[tuple[str, A.BasicTransform]]]:
    """Controlled changes of the four factors the model card reports, at fixed strengths."""

    def fixed(t: A.BasicTransform) -> A.Compose:
        return A.Compose([t], seed=seed)

    return {
        "lighting": [
            ("brightness -30%", fixed(A.RandomBrightnessContrast((-0.3, -0.3), (0, 0), p=1))),
            ("brightness +30%", fixed(A.RandomBrightnessContrast((0.3, 0.3), (0, 0), p=1))),
            ("contrast x0.6", fixed(A.RandomBrightnessContrast((0, 0), (-0.4, -0.4), p=1))),
            ("gamma 0.6", fixed(A.RandomGamma(gamma_limit=(60, 60), p=1))),
            ("gamma 1.6", fixed(A.RandomGamma(gamma_limit=(160, 160), p=1))),
        ],
        "camera angle": [
            ("rotation 5 deg", fixed(A.Rotate(limit=(5, 5), border_mode=cv2.BORDER_REFLECT_101,
                                              p=1))),
            ("perspective 0.05", fixed(A.Perspective(scale=(0.05, 0.05), p=1))),
        ],
        "distance": [
            ("scale x0.8", fixed(A.Affine(scale=(0.8, 0.8), border_mode=cv2.BORDER_REFLECT_101,
                                          p=1))),
            ("scale x1.25", fixed(A.Affine(scale=(1.25, 1.25), p=1))),
        ],
        "camera type": [
            ("gaussian blur 5px", fixed(A.GaussianBlur(blur_limit=(5, 5), p=1))),
            ("noise sigma 10", fixed(A.GaussNoise(std_range=(10 / 255, 10 / 255), p=1))),
            ("JPEG quality 30", fixed(A.ImageCompression(quality_range=(30, 30), p=1))),
        ],
    }


def plot_factors(rows: list[dict], reference: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    labels = [f"{r['factor']}: {r['change']}" for r in rows]
    values = [r["mean_dice"] for r in rows]
    ax.barh(np.arange(len(rows)), values, color="#66ccee")
    ax.axvline(reference, color="#4477aa", ls="--", lw=1, label=f"unchanged {reference:.3f}")
    ax.set_yticks(np.arange(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("mean Dice (competition metric)")
    lo = min([*values, reference])
    ax.set_xlim(max(0.0, lo - 0.05), 1.0)
    ax.legend(fontsize=7)
    ax.set_title("Metric under controlled changes (factors)")
    return write_figure(fig, path)

