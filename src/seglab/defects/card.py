"""The defect model card: parameter count, data, preprocessing, hyper-parameters,
measured metrics, factors, hardware and software, with warnings at its top when the
model does worse than the all-empty reference.
"""
from __future__ import annotations

import json
from typing import Any

from seglab.models.card import data_label, front_matter, where_comment
from seglab.results import DefectMetrics, FactorRow


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def model_card(config: Any, metrics: DefectMetrics, factors: list[FactorRow] | None = None,
               folder_name: str = "model") -> str:
    """The model's README.md: Hugging Face metadata plus Mitchell et al.'s sections."""
    tr = config.training
    names = config.model.classes
    eval_name = metrics.get("dataset") or "validation split"
    head = front_matter(
        config.display_name, ["segmentation", "unet", "segmentation-models-pytorch",
                              config.task], eval_name, config.recipe,
        [("dice", "mean Dice (competition)", metrics["mean_dice"]),
         ("dice", "Dice on defective pairs", metrics["mean_dice_defective"] or 0.0),
         ("dice", "all-empty baseline", metrics["all_empty_mean_dice"])])
    hw, sw = tr.get("hardware", {}), tr.get("software", {})
    post = config.postprocess
    lines = [*head, f"# {config.display_name}", "", *card_warnings(metrics),
             "## Model details", "",
             f"- Architecture: {config.model.arch} (segmentation_models_pytorch) with a "
             f"`{config.model.encoder}` encoder, {config.model.in_channels} input channels, "
             f"{len(names)} sigmoid output channels ({', '.join(names)})"
             + (", and an auxiliary image-level classification head" if config.model.aux_head
                else "") + ".",
             f"- Parameters: {tr.get('parameters', 'n/a'):,}" if isinstance(
                 tr.get("parameters"), int) else "- Parameters: n/a",
             f"- Encoder initialisation: {config.model.encoder_weights or 'random (from scratch)'}",
             f"- seglab version: {config.seglab_version}", "",
             "## Intended uses", "",
             ("Localising and classifying surface defects on images like the training data, "
              "and deciding whether an image is defective, as an aid to a human inspector."
              if config.task == "defects" else
              "Cutting a product out of a photo; a cut-out is shown only when the confidence "
              "gate accepts it."), "",
             "## Out-of-scope uses", "",
             "Images from other cameras, materials or lighting than the training data without "
             "re-evaluation (see Factors); safety-critical decisions without a person; "
             "defect types not among the classes.", "",
             "## How to get started", "", "```python", "import numpy as np", "",
             "import seglab", "",
             f'predictor = seglab.load_model("{folder_name}"){where_comment(folder_name)}',
             "image = np.full((256, 256, 3), 128, np.uint8)  # or seglab.read_image(path)",
             "prediction = predictor.predict(image)",
             "print(prediction.defect_score, prediction.classes_found, prediction.areas)",
             "```", "",
             "## Training data", "",
             f"- Data: `{data_label(tr.get('data'))}`; {tr.get('train_images', 'n/a')} training "
             "and "
             f"{tr.get('val_images', 'n/a')} validation images (seeded split stratified by the "
             "classes each image holds).", "",
             "## Preprocessing", "",
             f"- Input size: {tuple(config.input_size) if config.input_size else 'original'}"
             " (INTER_AREA resize); probabilities resized back to the original resolution.",
             f"- Normalisation: mean {list(config.normalization.mean)}, std "
             f"{list(config.normalization.std)} (on 0-1 RGB).", "",
             "## Hyper-parameters", "", "```json",
             json.dumps(tr.get("recipe_train", {}), indent=1), "```",
             f"- Epochs run: {tr.get('epochs_run', 'n/a')}, steps: {tr.get('steps', 'n/a')}, "
             f"training time: {tr.get('seconds', 'n/a')} s, precision: "
             f"{tr.get('precision', 'n/a')}.", "",
             "## Post-processing (tuned on the validation split)", "",
             "| class | pixel threshold | min area (px) | classifier threshold |",
             "|---|---|---|---|"]
    from seglab.infer.postprocess import per_class

    th = per_class(post.threshold, len(names))
    ar = per_class(post.min_area, len(names))
    ks = per_class(post.classifier_threshold, len(names))
    lines += [f"| {n} | {th[i]:.2f} | {int(ar[i])} | {ks[i]:.2f} |" for i, n in enumerate(names)]
    lines += ["", "## Evaluation data", "",
              f"{eval_name}: {metrics['images']} images, {metrics['defective_images']} with at "
              f"least one defect, {metrics['pairs']} image x class pairs."
              + (" The post-processing thresholds were tuned on this same data, so these "
                 "figures are optimistic; see `evaluation/` for held-out data where present."
                 if metrics.get("tuning") else ""), "",
              "## Metrics", "",
              "| metric | value |", "|---|---|",
              f"| mean Dice, competition metric (empty/empty = 1) | "
              f"{_fmt(metrics['mean_dice'])} |",
              f"| mean Dice on pairs whose truth has the class | "
              f"{_fmt(metrics['mean_dice_defective'])} |",
              f"| all-empty prediction, same metric (reference) | "
              f"{_fmt(metrics['all_empty_mean_dice'])} |",
              f"| defect / no-defect: precision | "
              f"{_fmt(metrics['defect_vs_no_defect']['precision'])} |",
              f"| defect / no-defect: recall | {_fmt(metrics['defect_vs_no_defect']['recall'])} |",
              f"| defect / no-defect: F1 | {_fmt(metrics['defect_vs_no_defect']['f1'])} |",
              f"| defect / no-defect: ROC-AUC | "
              f"{_fmt(metrics['defect_vs_no_defect']['roc_auc'])} |", "",
              "| class | Dice | Dice (with class) | images with class | classifier P / R / F1 "
              "| ROC-AUC |", "|---|---|---|---|---|---|"]
    for n in names:
        pc = metrics["per_class"][n]
        clf = pc["classifier"]
        lines.append(f"| {n} | {_fmt(pc['dice'])} | {_fmt(pc['dice_defective'])} | "
                     f"{pc['images_with_class']} | {_fmt(clf['precision'], 3)} / "
                     f"{_fmt(clf['recall'], 3)} / {_fmt(clf['f1'], 3)} | "
                     f"{_fmt(clf['roc_auc'], 3)} |")
    lines += ["", "![Dice per class](dice_per_class.png)", ""]
    lines += ["## Factors", ""]
    if factors:
        lines += ["The metric re-measured on the evaluation data under controlled changes "
                  "(geometric changes move the masks too):", "",
                  "| factor | change | mean Dice | Dice (with class) | change vs unchanged |",
                  "|---|---|---|---|---|"]
        for r in factors:
            lines.append(f"| {r['factor']} | {r['change']} | {_fmt(r['mean_dice'])} | "
                         f"{_fmt(r['mean_dice_defective'])} | "
                         f"{r['mean_dice'] - metrics['mean_dice']:+.4f} |")
        lines += ["", "![Factors](factors.png)", ""]
    else:
        lines += ["Not measured for this model (run `seglab evaluate MODEL --data DIR "
                  "--factors`).", ""]
    lines += ["## Hardware and software", "",
              f"- Hardware: {hw.get('cpu', 'n/a')}, {hw.get('cpu_threads', 'n/a')} threads"
              + (f", GPU {hw['gpu']}" if "gpu" in hw else ", no GPU") + ".",
              "- Software: " + ", ".join(f"{k} {v}" for k, v in sw.items()), "",
              "## Caveats", "",
              "Metrics come from the validation data named above; real production images may "
              "differ in camera, lighting and defect mix. Re-measure before relying on it.", ""]
    return "\n".join(lines)


def card_warnings(metrics: dict) -> list[str]:
    """Lines that open a defect model's card when its figures say not to use it."""
    out = []
    empty, dice = metrics.get("all_empty_mean_dice"), metrics.get("mean_dice")
    if empty is not None and dice is not None and dice < empty:
        out.append(f"> **Warning: worse than predicting nothing.** Mean Dice {dice:.4f} is "
                   f"below the {empty:.4f} an all-empty prediction scores on the same "
                   "images: this model marks defects where there are none more than it finds "
                   "real ones. Do not use it to decide anything.")
    auc = (metrics.get("defect_vs_no_defect") or {}).get("roc_auc")
    if auc is not None and auc < 0.5:
        out.append(f"> **Warning: the defect / no-defect score is worse than chance** "
                   f"(ROC-AUC {auc:.3f} < 0.5): defective images score lower than clean ones.")
    return [line for w in out for line in (w, "")]

