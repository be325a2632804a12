"""Masks drawn over the photo, one colour per class: what prediction writes
beside each mask. Only NumPy and OpenCV, so inference never loads a plotting library.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

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
            contour: bool = True, names: Sequence[str] | None = None) -> np.ndarray:
    """Colour each class's mask over the image (fill plus outline), one colour per class.

    With ``names``, a legend band goes under the image (never over the strip): each
    class found, as its colour, name and share of the image, or "no defect found".
    """
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
    if names is None:
        return out
    entries = [(c, f"{names[c]} {masks[c].mean():.1%}") for c in range(len(masks))
               if masks[c].any()]
    return np.vstack([out, _legend(out.shape[1], entries)])


def _legend(width: int, entries: list[tuple[int, str]]) -> np.ndarray:
    """Rows of colour swatch + label on white, wrapped to ``width``; drawn with OpenCV's
    Hershey font so inference needs no font files or plotting library."""
    grow = max(1.0, width / 800)  # readable when a 1600 px strip is shown page-wide
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.45 * grow, max(1, round(grow))
    row_h, pad, box = round(20 * grow), round(6 * grow), round(12 * grow)
    items = entries or [(-1, "no defect found")]
    rows: list[list[tuple[int, str, int]]] = [[]]
    x = pad
    for c, label in items:
        w = box + 4 + cv2.getTextSize(label, font, scale, thick)[0][0] + 2 * pad
        if rows[-1] and x + w > width:
            rows.append([])
            x = pad
        rows[-1].append((c, label, x))
        x += w
    band = np.full((row_h * len(rows) + 4, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        y = 2 + r * row_h
        for c, label, x0 in row:
            tx = x0
            if c >= 0:
                top = y + round(4 * grow)
                cv2.rectangle(band, (x0, top), (x0 + box, top + box), color_of(c), -1)
                tx = x0 + box + 4
            cv2.putText(band, label, (tx, y + round(15 * grow)), font, scale, (30, 30, 30), thick,
                        cv2.LINE_AA)
    return band
