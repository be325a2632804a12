"""Pictures a person reviews cut-outs by: the review sheet (photo, raw mask,
cleaned mask, cut-out, what a person sees, green or red), gate histograms and the
precision/coverage curve.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import matplotlib.pyplot as plt
import numpy as np

from seglab.data.figures import write_figure
from seglab.data.files import write_text_atomic

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

    from seglab.data.images import write_image

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
    return write_figure(fig, path)


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
    return write_figure(fig, path)

