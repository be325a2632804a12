"""``seglab.fit``: the whole training recipe in one call, owned by the library.

Train the recipe's model; then, for a defect model, tune thresholds on the
validation split, measure it and write its card; for a cut-out model, measure the
gate on the validation composites and write its card. The CLI (``seglab train``),
the demo and the tests all call this, so a model folder is finished the same way
wherever it is made.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seglab.recipes import Recipe, load_recipe, merge_overrides
from seglab.training.trainer import Split, split_dataset, train


@dataclass
class FitResult:
    """A finished model folder and what was measured on its validation split.

    ``metrics`` is the defect score (``mean_dice``, per class, tuning, ...) or the
    cut-out gate report (``mean_iou``, ``accepted_share``, ...). The result is also a
    path (``os.fspath``), so it can be handed to ``seglab.load_model`` or ``seglab.export``.
    """

    model_dir: Path
    task: str
    metrics: Any = field(default_factory=dict)
    """The defect score (a dict) or the cut-out :class:`~seglab.cutout.batch.GateReport`."""
    split: Split | None = field(default=None, repr=False)

    def __fspath__(self) -> str:
        return str(self.model_dir)

    def summary(self) -> str:
        """One line for a terminal."""
        m = self.metrics
        if self.task == "cutout":
            return (f"validation mean IoU {m['mean_iou']:.4f}, accepted "
                    f"{m['accepted_share']:.1%} at the gate")
        from seglab.defects.evaluate import summary_line

        return summary_line(m)


def fit(recipe: str | os.PathLike[str] | Recipe, data: str | os.PathLike[str],
        out: str | os.PathLike[str], *, overrides: Sequence[str | dict] = (),
        init: str | os.PathLike[str] | None = None, resume: bool = False,
        tune: bool = True, factors: bool = True, progress: bool = True,
        devices: int | str = 1, num_nodes: int = 1, accelerator: str = "auto",
        strategy: str = "auto", split: Split | None = None,
        dataset_name: str | None = None) -> FitResult:
    """Train ``recipe`` on ``data`` into ``out`` and finish its model folder ``out/model``.

    ``overrides`` change recipe values (``"train.lr=0.001"`` or nested dicts); ``init``
    starts from a trained model folder or zoo name (fine-tuning); ``resume`` continues
    from ``out/checkpoints/last.ckpt`` after a kill. On non-zero DDP ranks the model
    folder is not written and ``metrics`` stays empty.
    """
    if init is not None:
        overrides = [*overrides, {"train": {"init_from": str(init)}}]
    spec = recipe if isinstance(recipe, Recipe) else load_recipe(
        recipe, merge_overrides(*overrides) or None)
    if isinstance(recipe, Recipe) and overrides:
        spec = Recipe.model_validate(merge_overrides(recipe.model_dump(mode="json"),
                                                     *overrides))
    split = split or split_dataset(spec, data)
    name = dataset_name or f"validation split of {data}"
    model_dir = train(spec, data, out, resume=resume, devices=devices, num_nodes=num_nodes,
                      accelerator=accelerator, strategy=strategy, progress=progress,
                      split=split)
    if not model_dir.exists():  # non-zero DDP ranks
        return FitResult(model_dir, spec.task, {}, split)
    if spec.task == "cutout":
        from seglab.cutout.batch import gate_report
        from seglab.cutout.card import cutout_card
        from seglab.infer.predictor import load_model
        from seglab.models import folder as modelfolder

        predictor = load_model(model_dir)
        report = gate_report(predictor, split.val, model_dir, name=name, progress=progress)
        modelfolder.update(model_dir, card=cutout_card(predictor.config, report,
                                                       model_dir.name))
        return FitResult(model_dir, spec.task, report, split)
    from seglab.defects.evaluate import document

    metrics = document(str(model_dir), split.val, dataset_name=name, tune_first=tune,
                       factors=factors, progress=progress)
    return FitResult(model_dir, spec.task, metrics, split)

