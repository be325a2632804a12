"""Masks drawn over the photo, one colour per class: what prediction writes
beside each mask. Only NumPy and OpenCV, so inference never loads a plotting library.
"""
from __future__ import annotations

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

