"""The scenes a jewellery piece is pasted on: blurred colour fields, abstract shapes,
crops of room and hand photos, studio sweeps, fabric and wood. Each maker draws only from
the ``rng`` it is given, so a composite's seed fixes its background.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from seglab.data.images import IMAGE_SUFFIXES, list_images, read_image
from seglab.recipes import SynthSpec


def list_photos(folders: Sequence[str | os.PathLike[str]]) -> list[Path]:
    return [p for f in folders for p in list_images(f) if p.suffix.lower() in IMAGE_SUFFIXES]


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0 else img


def colour_field(rng: np.random.Generator, size: tuple[int, int], spec: SynthSpec
                 ) -> np.ndarray:
    """A smooth random colour field: a gradient between two colours plus low-frequency noise."""
    h, w = size
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    field = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    noise = cv2.resize(rng.normal(0, 25, (4, 4, 3)).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    out = np.clip(field + noise, 0, 255).astype(np.uint8)
    return _blur(out, rng.uniform(*spec.background_blur))


def shapes_field(rng: np.random.Generator, size: tuple[int, int], spec: SynthSpec
                 ) -> np.ndarray:
    """A colour field with random abstract shapes of various colours, then blurred."""
    h, w = size
    img = colour_field(rng, size, spec.model_copy(update={"background_blur": (0.0, 0.0)}))
    for _ in range(int(rng.integers(spec.shapes_count[0], spec.shapes_count[1] + 1))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind == 0:
            axes = (int(rng.integers(5, w // 3)), int(rng.integers(5, h // 3)))
            cv2.ellipse(img, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        elif kind == 1:
            pts = rng.integers(0, [w, h], size=(int(rng.integers(3, 7)), 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], colour)
        else:
            cv2.line(img, (cx, cy), (int(rng.integers(0, w)), int(rng.integers(0, h))), colour,
                     int(rng.integers(2, 12)))
    return _blur(img, rng.uniform(*spec.background_blur))


def photo_background(rng: np.random.Generator, paths: Sequence[Path], size: tuple[int, int],
                     spec: SynthSpec) -> np.ndarray:
    """A random crop of a photo, resized to the composite size and lightly blurred."""
    h, w = size
    img = read_image(paths[int(rng.integers(len(paths)))])
    ih, iw = img.shape[:2]
    scale = rng.uniform(0.6, 1.0)
    ch, cw = max(8, int(ih * scale)), max(8, int(iw * scale))
    y0, x0 = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
    crop = cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    low, high = spec.background_blur
    return _blur(np.ascontiguousarray(crop), rng.uniform(0, low + (high - low) / 3))


# Studio sweep base colours (RGB): white, off-whites, greys, beige/cream, soft pastels.
_STUDIO = np.array([[250, 250, 250], [242, 242, 238], [228, 228, 228], [205, 205, 208],
                    [160, 160, 165], [236, 226, 208], [222, 206, 184], [245, 238, 226],
                    [232, 222, 230], [214, 228, 236], [226, 236, 222], [40, 40, 42]], np.float32)


def studio_field(rng: np.random.Generator, size: tuple[int, int], spec: SynthSpec,
                 base: tuple[int, int, int] | None = None) -> np.ndarray:
    """A packshot sweep: one plain colour, lighter at the top or centre, with faint grain."""
    h, w = size
    base = (np.asarray(base, np.float32) if base is not None
            else _STUDIO[int(rng.integers(len(_STUDIO)))] + rng.normal(0, 6, 3))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:  # vertical sweep: light falls from above
        light = 1 - rng.uniform(0.0, 0.18) * yy / h
    else:  # vignette around a bright spot
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        dist = np.hypot((yy - cy) / h, (xx - cx) / w)
        light = 1 - rng.uniform(0.0, 0.3) * dist
    img = base[None, None] * light[..., None] + rng.normal(0, rng.uniform(0.5, 3), (h, w, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


TEXTURES = ("velvet", "weave", "wood")


def texture_field(rng: np.random.Generator, size: tuple[int, int], spec: SynthSpec,
                  kind: str | None = None) -> np.ndarray:
    """Fabric (velvet or a weave) or wood grain, the surfaces jewellery is laid on."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    low = cv2.resize(rng.normal(0, 1, (6, 6)).astype(np.float32), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    drawn = int(rng.integers(3))
    kind = kind or TEXTURES[drawn]
    if kind == "velvet":  # velvet: deep colour, soft folds of light
        colour = rng.uniform([10, 10, 10], [140, 60, 120])[rng.permutation(3)]
        shade = 1 + 0.35 * low
    elif kind == "weave":  # linen or satin weave: fine crossing threads
        colour = rng.uniform(60, 240, 3)
        period = rng.uniform(2.5, 7)
        weave = np.sin(2 * np.pi * xx / period) * np.sin(2 * np.pi * yy / period)
        shade = 1 + 0.12 * weave + 0.15 * low
    else:  # wood: warped growth rings along the grain
        colour = np.array([rng.uniform(90, 200), rng.uniform(55, 130), rng.uniform(25, 80)])
        along = xx if rng.random() < 0.5 else yy
        rings = np.sin(2 * np.pi * (along / rng.uniform(6, 20) + 2.5 * low))
        shade = 1 + 0.18 * rings + 0.1 * low
    img = colour[None, None] * shade[..., None] + rng.normal(0, 4, (h, w, 3))
    img = cv2.warpAffine(np.clip(img, 0, 255).astype(np.uint8),
                         cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(0, 180)),
                                                 1.5), (w, h), borderMode=cv2.BORDER_REFLECT)
    return _blur(img, rng.uniform(0, spec.background_blur[0]))
