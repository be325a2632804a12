"""Typed results: what seglab's batch, report and export functions return.

Each is a pydantic model, so fields are named, typed and visible to IDEs
(``summary.accepted``), and it is written to disk exactly as it is returned
(``to_json``). Item access (``summary["accepted"]``) also works, because these
results mirror the JSON files users already script against.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Result(BaseModel):
    """Base of every typed result: attribute and item access, JSON like the files."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in type(self).model_fields else default

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


class FileError(Result):
    """One input that could not be used, and why; the batch went on without it."""

    image: str
    error: str


class Detection(Result):
    """Binary image-level decisions against the truth (1 = defect present): precision,
    recall, F1, the four counts and, for scores, the ROC-AUC (``None`` with one class)."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    tn: int
    roc_auc: float | None = None


class ClassMetrics(Result):
    """One class of a defect evaluation."""

    dice: float
    """Mean Dice over all images (an empty truth and an empty prediction score 1)."""
    dice_defective: float | None
    """Mean Dice over the images that hold the class; ``None`` when none does."""
    images_with_class: int
    detection: Detection
    """Image-level: the post-processed mask is present."""
    classifier: Detection
    """Image-level: the head's probability is over its threshold."""
    iou: float | None = None
    """IoU pooled over every pixel of the data (benchmark mIoU terms)."""


class ClassTuning(Result):
    """The post-processing chosen for one class, and the mean Dice before and after."""

    threshold: float
    min_area: int
    classifier_threshold: float
    mean_dice: float
    mean_dice_untuned: float


class FactorRow(Result):
    """The metric re-measured under one controlled change (lighting, angle, ...)."""

    factor: str
    change: str
    mean_dice: float
    mean_dice_defective: float | None


class DefectMetrics(Result):
    """What ``defects.evaluate.score`` measures and ``document`` writes to
    ``metrics.json``: the competition mean Dice over image x class pairs beside the
    all-empty reference, pooled IoU, per class and image-level detection scores."""

    images: int
    pairs: int
    mean_iou: float | None
    mean_dice: float
    mean_dice_defective: float | None
    all_empty_mean_dice: float
    defective_images: int
    per_class: dict[str, ClassMetrics]
    defect_vs_no_defect: Detection
    skipped: list[str]
    dataset: str | None = None
    tta: bool | None = None
    untuned_mean_dice: float | None = None
    tuning: dict[str, ClassTuning] = {}
    factors: list[FactorRow] = []
