"""The cut-out model card: the gate's measured acceptance and precision, with
warnings at its top when a person would never be shown a cut-out.
"""
from __future__ import annotations

from typing import Any

from seglab.models.card import data_label, front_matter, where_comment


def cutout_warnings(report: dict) -> list[str]:
    """Lines that open a cut-out model's card when its gate would show people nothing."""
    if report.get("accepted_share", 0) > 0:
        return []
    return ["> **Warning: the gate accepts none of the evaluation photos**, so a person is "
            "always shown the original photo; the masks are not confident enough for the "
            "gate (see the precision / coverage plot).", ""]


def cutout_card(config: Any, report: dict, folder_name: str = "model") -> str:
    """Model card of a background-removal model, with its measured gate report."""
    tr, gate = config.training, config.gate
    head = front_matter(config.display_name, ["background-removal", "unet",
                                              "segmentation-models-pytorch"],
                        report["data"], config.recipe,
                        [("iou", "mean IoU", report["mean_iou"]),
                         ("accuracy", "accepted share", report["accepted_share"])])
    hw, sw = tr.get("hardware", {}), tr.get("software", {})
    prec = report["precision_of_accepted"]
    return "\n".join([
        *head, f"# {config.display_name}", "", *cutout_warnings(report), "## Model details", "",
        f"- {config.model.arch} with a `{config.model.encoder}` encoder, "
        f"{config.model.in_channels} input channels, 1 output channel (logits; sigmoid at "
        f"inference); parameters: {tr.get('parameters', 'n/a')}.",
        f"- Encoder initialisation: {config.model.encoder_weights or 'random (from scratch)'}",
        "", "## Intended uses", "",
        "Cutting jewellery out of product photos. A cut-out is shown to a person only when "
        f"the mask covers {gate.min_area_fraction:.0%}-{gate.max_area_fraction:.0%} of the "
        f"image and confidence >= {gate.min_confidence}; otherwise the original photo is "
        "shown and the reason recorded.", "",
        "## How to get started", "", "```python", "import seglab",
        "from seglab.demo import samples_folder", "",
        "# a photo shipped with seglab; use your own path instead",
        'photo = sorted((samples_folder() / "jewellery" / "images").glob("*.jpg"))[0]',
        f'result = seglab.remove(photo, model="{folder_name}"){where_comment(folder_name)}',
        "print(result.decision.accepted, result.decision.confidence, result.decision.reason)",
        "```", "",
        "## Training data", "",
        f"`{data_label(tr.get('data'))}`: {tr.get('train_images', 'n/a')} training and "
        f"{tr.get('val_images', 'n/a')} validation images.", "",
        "## Evaluation (gate report)", "",
        "| metric | value |", "|---|---|",
        f"| images | {report['images']} |",
        f"| mean IoU | {report['mean_iou']:.4f} |",
        f"| accepted share | {report['accepted_share']:.4f} |",
        f"| precision of accepted (IoU >= {report['iou_good']}) | "
        f"{'n/a' if prec is None else f'{prec:.4f}'} |", "",
        "![precision vs coverage](precision_coverage.png)", "",
        "## Hardware and software", "",
        f"- Hardware: {hw.get('cpu', 'n/a')}, {hw.get('cpu_threads', 'n/a')} threads.",
        "- Software: " + ", ".join(f"{k} {v}" for k, v in sw.items()), ""])

