"""What people look at: overlays, metric plots, factor analysis and the model card.

Plots use matplotlib's Agg backend (no screen, no internet). The model card
follows Mitchell et al.'s sections with Hugging Face YAML metadata; every
number in it is read from the measured metrics, never typed by hand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from seglab.io import write_bytes_atomic, write_text_atomic

CLASS_COLORS: list[tuple[int, int, int]] = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
    (245, 130, 48), (70, 240, 240), (240, 50, 230),
]


def color_of(index: int) -> tuple[int, int, int]:
    return CLASS_COLORS[index % len(CLASS_COLORS)]


def hex_colour(index: int) -> str:
    """The class colour as CSS ``#rrggbb``, so pages and plots match the overlays."""
    return "#" + "".join(f"{v:02x}" for v in color_of(index))


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.45,
            contour: bool = True) -> np.ndarray:
    """Colour each class's mask over the image (fill plus outline), one colour per class."""
    out = image.astype(np.float32).copy()
    for c, mask in enumerate(masks):
        m = mask.astype(bool)
        if not m.any():
            continue
        out[m] = (1 - alpha) * out[m] + alpha * np.asarray(color_of(c), np.float32)
    out = out.clip(0, 255).astype(np.uint8)
    if contour:
        for c, mask in enumerate(masks):
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, color_of(c), 1)
    return out


def _save_figure(fig: plt.Figure, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return path


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
    return _save_figure(fig, path)


def plot_pr_curves(class_probs: np.ndarray, truth: np.ndarray, names: Sequence[str],
                   path: Path) -> Path:
    """Image-level precision-recall curve of each class's defect probability."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for c, name in enumerate(names):
        has = truth[:, c].astype(bool)
        if not has.any() or has.all():
            continue
        order = np.argsort(-class_probs[:, c], kind="stable")
        tp = np.cumsum(has[order])
        precision = tp / np.arange(1, len(order) + 1)
        recall = tp / has.sum()
        ax.plot(np.r_[0, recall], np.r_[1, precision], label=name,
                color=np.asarray(color_of(c)) / 255)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_title("Image-level precision-recall per class")
    ax.legend(fontsize=7)
    return _save_figure(fig, path)


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
    return _save_figure(fig, path)


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
    return _save_figure(fig, path)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def model_card(config: Any, metrics: dict, factors: list[dict] | None = None,
               folder_name: str = "model") -> str:
    """The model's README.md: Hugging Face metadata plus Mitchell et al.'s sections."""
    import yaml

    tr = config.training
    names = config.model.classes
    eval_name = metrics.get("dataset", "validation split")
    results = [{"task": {"type": "image-segmentation"},
                "dataset": {"name": eval_name, "type": config.recipe},
                "metrics": [
                    {"type": "dice", "name": "mean Dice (competition)",
                     "value": round(metrics["mean_dice"], 5)},
                    {"type": "dice", "name": "Dice on defective pairs",
                     "value": round(metrics["mean_dice_defective"] or 0.0, 5)},
                    {"type": "dice", "name": "all-empty baseline",
                     "value": round(metrics["all_empty_mean_dice"], 5)},
                ]}]
    meta = {"library_name": "seglab", "pipeline_tag": "image-segmentation",
            "tags": ["segmentation", "unet", "segmentation-models-pytorch", config.task],
            "model-index": [{"name": config.display_name, "results": results}]}
    hw, sw = tr.get("hardware", {}), tr.get("software", {})
    post = config.postprocess
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# {config.display_name}", "", *card_warnings(metrics),
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
             "## How to get started", "", "```python", "import seglab", "",
             f'predictor = seglab.load_model("{folder_name}")',
             "prediction = predictor.predict(\"image.jpg\")",
             "print(prediction.defect_score, prediction.classes_found, prediction.areas)",
             "```", "",
             "## Training data", "",
             f"- Data: `{tr.get('data', 'n/a')}`; {tr.get('train_images', 'n/a')} training and "
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
    from seglab.postprocess import per_class

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


def cutout_warnings(report: dict) -> list[str]:
    """Lines that open a cut-out model's card when its gate would show people nothing."""
    if report.get("accepted_share", 0) > 0:
        return []
    return ["> **Warning: the gate accepts none of the evaluation photos**, so a person is "
            "always shown the original photo; the masks are not confident enough for the "
            "gate (see the precision / coverage plot).", ""]


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


GREEN = (40, 170, 60)
RED = (210, 40, 40)


def _thumb(img: np.ndarray, max_side: int) -> np.ndarray:
    scale = max_side / max(img.shape[:2])
    if scale >= 1:
        return img
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def _checker(shape: tuple[int, int], cell: int = 8) -> np.ndarray:
    yy, xx = np.indices(shape)
    board = np.where(((yy // cell) + (xx // cell)) % 2 == 0, 235, 200).astype(np.uint8)
    return np.repeat(board[..., None], 3, axis=2)


def _flatten(rgba: np.ndarray) -> np.ndarray:
    """An RGBA cut-out over a checkerboard, so transparency is visible."""
    if rgba.shape[2] == 3:
        return rgba
    a = rgba[..., 3:].astype(np.float32) / 255
    board = _checker(rgba.shape[:2]).astype(np.float32)
    return (rgba[..., :3] * a + board * (1 - a)).astype(np.uint8)


def review_row(name: str, cut: Any, max_side: int = 220) -> dict:
    """The five panels of one image, as small thumbnails (bounded memory for big batches)."""
    grey = lambda m: np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2)  # noqa: E731
    shown = cut.shown()
    return {
        "name": name, "accepted": cut.decision.accepted, "reason": cut.decision.reason,
        "confidence": cut.decision.confidence, "area_fraction": cut.decision.area_fraction,
        "panels": [_thumb(p, max_side) for p in (
            cut.image, grey(cut.raw_mask), grey(cut.mask), _flatten(cut.rgba()),
            _flatten(shown) if shown.shape[2] == 4 else shown)],
    }


REVIEW_HEADS = ("photo", "raw mask", "cleaned mask", "cut-out", "what a person sees")


def _review_page(rows: list[dict], cell: int) -> np.ndarray:
    pad, head, text_h = 8, 26, 34
    width = 5 * (cell + pad) + pad
    height = head + len(rows) * (cell + text_h + pad) + pad
    page = np.full((height, width, 3), 255, np.uint8)
    for i, title in enumerate(REVIEW_HEADS):
        cv2.putText(page, title, (pad + i * (cell + pad), 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
    for r, row in enumerate(rows):
        top = head + r * (cell + text_h + pad)
        colour = GREEN if row["accepted"] else RED
        for i, panel in enumerate(row["panels"]):
            ph, pw = panel.shape[:2]
            left = pad + i * (cell + pad) + (cell - pw) // 2
            y0 = top + (cell - ph) // 2
            page[y0:y0 + ph, left:left + pw] = panel
            if i == 4:  # the frame hugs what a person sees, whatever its aspect ratio
                cv2.rectangle(page, (left - 3, y0 - 3), (left + pw + 2, y0 + ph + 2), colour, 3)
        verdict = "ACCEPTED" if row["accepted"] else "REJECTED: " + row["reason"]
        line = f"{row['name']}  conf {row['confidence']:.3f}  area {row['area_fraction']:.1%}"
        cv2.putText(page, line, (pad, top + cell + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(page, verdict[:110], (pad, top + cell + 29), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    colour, 1, cv2.LINE_AA)
    return page


def review_sheet(items: Sequence[tuple[str, Any]] | Sequence[dict], folder: Path,
                 rows_per_page: int = 8, cell: int = 220) -> list[Path]:
    """Paginated PNG review sheets plus ``index.html`` with the same rows.

    Each row: the photo, the raw mask, the cleaned mask, the cut-out and what a
    person sees, framed green when accepted and red when rejected (with the reason).
    """
    import html

    from seglab.io import write_image

    rows = [it if isinstance(it, dict) else review_row(it[0], it[1], cell) for it in items]
    pages = []
    for n, start in enumerate(range(0, len(rows), rows_per_page), start=1):
        path = folder / f"review_{n:03d}.png"
        write_image(path, _review_page(rows[start:start + rows_per_page], cell))
        pages.append(path)
    body = ["<!doctype html><html><head><meta charset='utf-8'><title>seglab review sheet"
            "</title><style>body{font-family:sans-serif}td{padding:4px;text-align:center}"
            ".ok{border:5px solid rgb(40,170,60)}.no{border:5px solid rgb(210,40,40)}"
            "img{max-width:220px;max-height:220px}</style></head><body>",
            "<h1>Review sheet</h1><table><tr>"
            + "".join(f"<th>{h}</th>" for h in REVIEW_HEADS) + "<th>decision</th></tr>"]
    for i, row in enumerate(rows):
        cells = []
        for j, panel in enumerate(row["panels"]):
            rel = f"panels/{i:05d}_{j}.png"
            write_image(folder / rel, panel)
            cls = (" class='ok'" if row["accepted"] else " class='no'") if j == 4 else ""
            cells.append(f"<td><img src='{rel}'{cls} alt='{REVIEW_HEADS[j]}'></td>")
        verdict = "accepted" if row["accepted"] else "rejected: " + html.escape(row["reason"])
        body.append(f"<tr>{''.join(cells)}<td><b>{html.escape(row['name'])}</b><br>"
                    f"{verdict}<br>confidence {row['confidence']:.3f}<br>"
                    f"area {row['area_fraction']:.1%}</td></tr>")
    body.append("</table></body></html>")
    write_text_atomic(folder / "index.html", "\n".join(body))
    return pages


def gate_histograms(rows: Sequence[dict], path: Path) -> Path:
    """Unlabelled photos: accepted share, confidence and area histograms."""
    conf = np.array([r["confidence"] for r in rows])
    area = np.array([r["area_fraction"] for r in rows])
    accepted = np.array([r["accepted"] for r in rows], bool)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].hist([conf[accepted], conf[~accepted]], bins=20, range=(0, 1), stacked=True,
                 color=["#28aa3c", "#d22828"], label=["accepted", "rejected"])
    axes[0].set_xlabel("confidence")
    axes[0].legend(fontsize=7)
    axes[1].hist([area[accepted], area[~accepted]], bins=20, range=(0, 1), stacked=True,
                 color=["#28aa3c", "#d22828"])
    axes[1].set_xlabel("mask area fraction")
    fig.suptitle(f"{accepted.sum()} of {len(rows)} accepted ({accepted.mean():.0%})")
    return _save_figure(fig, path)


def precision_coverage(confidences: np.ndarray, ious: np.ndarray, area_ok: np.ndarray,
                       iou_good: float = 0.95) -> list[dict]:
    """Precision of accepted results (IoU >= iou_good) and coverage as the threshold moves."""
    out = []
    for t in np.round(np.arange(0.5, 1.0001, 0.01), 2):
        acc = area_ok & (confidences >= t)
        n = int(acc.sum())
        out.append({"threshold": float(t), "coverage": n / max(len(ious), 1),
                    "precision": float((ious[acc] >= iou_good).mean()) if n else None,
                    "accepted": n})
    return out


def plot_precision_coverage(curve: list[dict], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    t = [c["threshold"] for c in curve]
    ax.plot(t, [c["coverage"] for c in curve], label="coverage (share accepted)")
    ax.plot(t, [np.nan if c["precision"] is None else c["precision"] for c in curve],
            label="precision (IoU >= 0.95 among accepted)")
    ax.set_xlabel("confidence threshold")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return _save_figure(fig, path)


def cutout_card(config: Any, report: dict, folder_name: str = "model") -> str:
    """Model card of a background-removal model, with its measured gate report."""
    import yaml

    tr, gate = config.training, config.gate
    meta = {"library_name": "seglab", "pipeline_tag": "image-segmentation",
            "tags": ["background-removal", "unet", "segmentation-models-pytorch"],
            "model-index": [{"name": config.display_name, "results": [{
                "task": {"type": "image-segmentation"},
                "dataset": {"name": report["data"], "type": config.recipe},
                "metrics": [
                    {"type": "iou", "name": "mean IoU", "value": round(report["mean_iou"], 5)},
                    {"type": "accuracy", "name": "accepted share",
                     "value": round(report["accepted_share"], 5)}]}]}]}
    hw, sw = tr.get("hardware", {}), tr.get("software", {})
    prec = report["precision_of_accepted"]
    return "\n".join([
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
        f"# {config.display_name}", "", *cutout_warnings(report), "## Model details", "",
        f"- {config.model.arch} with a `{config.model.encoder}` encoder, "
        f"{config.model.in_channels} input channels, 1 output channel (logits; sigmoid at "
        f"inference); parameters: {tr.get('parameters', 'n/a')}.",
        f"- Encoder initialisation: {config.model.encoder_weights or 'random (from scratch)'}",
        "", "## Intended uses", "",
        "Cutting jewellery out of product photos. A cut-out is shown to a person only when "
        f"the mask covers {gate.min_area_fraction:.0%}-{gate.max_area_fraction:.0%} of the "
        f"image and confidence >= {gate.min_confidence}; otherwise the original photo is "
        "shown and the reason recorded.", "",
        "## How to get started", "", "```python", "import seglab", "",
        f'result = seglab.remove("photo.jpg", model="{folder_name}")',
        "print(result.decision.accepted, result.decision.confidence, result.decision.reason)",
        "```", "",
        "## Training data", "",
        f"`{tr.get('data', 'n/a')}`: {tr.get('train_images', 'n/a')} training and "
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


def chart_svg(kind: str, values: Sequence[float] | dict[str, int], *, title: str,
              xlabel: str = "", value_range: tuple[float, float] = (0.0, 1.0),
              bins: int = 20) -> bytes:
    """A small SVG chart for web pages (``kind`` is ``"bars"`` or ``"hist"``).

    Rendered on the server with matplotlib's object API (no pyplot state, so it is
    safe in the service's worker threads) and needs nothing from the internet.
    """
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 2.8))
    ax = fig.add_subplot()
    if kind == "bars":
        assert isinstance(values, dict)
        names = list(values)
        ax.bar(names, [values[n] for n in names],
               color=[hex_colour(i) for i in range(len(names))])
        ax.set_ylabel("images")
        if not names:
            ax.text(0.5, 0.5, "nothing yet", ha="center", va="center", transform=ax.transAxes)
    else:
        data = np.asarray(list(values), dtype=float)
        ax.hist(data, bins=bins, range=value_range, color="#3c78c8")
        ax.set_ylabel("images")
        if not data.size:
            ax.text(0.5, 0.5, "nothing yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()
