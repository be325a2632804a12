"""Synthetic jewellery composites: RGBA cut-outs pasted on the scenes of
:mod:`seglab.data.backgrounds`.

A piece may be tilted (another camera angle), recoloured, mirror the scene around it,
or come with a second piece (a pair or a set); the finished photo may be softened,
noisy or JPEG-compressed as marketplace photos are. Each composite is drawn from its own seed
(``seed`` and index), so a composite is the same whichever process makes it,
and a run is reproducible byte for byte. The compositing itself is written by
hand on OpenCV/numpy because it must follow the alpha channel exactly (the
mask is the transformed alpha), which augmentation libraries do not offer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seglab.data.backgrounds import (
    colour_field,
    photo_background,
    shapes_field,
    studio_field,
    texture_field,
)
from seglab.data.cutouts import Foreground
from seglab.data.files import write_text_atomic
from seglab.data.images import write_image
from seglab.errors import SeglabError
from seglab.recipes import SynthSpec

# New kinds go at the end: a zero share then leaves older recipes' streams unchanged.
KINDS = ("colour", "shapes", "rooms", "hands", "studio", "texture")


def degrade(image: np.ndarray, rng: np.random.Generator, spec: SynthSpec) -> np.ndarray:
    """What cameras and marketplaces do to a photo: soft focus, sensor noise, JPEG."""
    if spec.soften and rng.random() < spec.soften:
        if rng.random() < 0.5:
            image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.2))
        else:
            h, w = image.shape[:2]
            f = rng.uniform(0.4, 0.8)
            small = cv2.resize(image, (max(8, int(w * f)), max(8, int(h * f))),
                               interpolation=cv2.INTER_AREA)
            image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if spec.noise and rng.random() < spec.noise:
        noisy = image.astype(np.float32) + rng.normal(0, rng.uniform(2, 8), image.shape)
        image = np.clip(noisy, 0, 255).astype(np.uint8)
    if spec.jpeg and rng.random() < spec.jpeg:
        quality = int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:  # channel order does not matter for a round trip through JPEG
            image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return image


def _jitter(rgb: np.ndarray, rng: np.random.Generator, spec: SynthSpec) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-spec.jitter_hue, spec.jitter_hue) * 180) % 180
    hsv[..., 1] *= 1 + rng.uniform(-spec.jitter_saturation, spec.jitter_saturation)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(
        np.float32)
    contrast = 1 + rng.uniform(-spec.jitter_contrast, spec.jitter_contrast)
    brightness = rng.uniform(-spec.jitter_brightness, spec.jitter_brightness) * 255
    return np.clip((out - out.mean()) * contrast + out.mean() + brightness, 0, 255).astype(
        np.uint8)


def _reflect(rgb: np.ndarray, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mix a blurred, mirrored copy of the scene into the piece, most where it is bright.

    A mirror-polished surface shows its surroundings, not the scene behind it: hence the
    background flipped upside down and blurred (curved metal), weighted by brightness
    so highlights and plain metal take the scene's colours while dark stones keep theirs.
    """
    scene = cv2.GaussianBlur(background[::-1], (0, 0), max(1.0, rgb.shape[1] / 60))
    value = rgb.max(axis=2, keepdims=True).astype(np.float32) / 255
    k = float(rng.uniform(0.2, 0.7)) * value
    return np.clip(rgb * (1 - k) + scene * k + 0.5, 0, 255).astype(np.uint8)


def _tilt(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The piece seen from another camera angle: each corner moved by up to 12% of the side.

    A perspective warp makes new outlines and opening shapes from the few real cut-outs,
    as a photographer's tilted camera would (a rotation in the image plane does not).
    """
    side = canvas.shape[0]
    corners = np.float32([[0, 0], [side, 0], [side, side], [0, side]])
    moved = corners + rng.uniform(-0.12, 0.12, (4, 2)).astype(np.float32) * side
    # Corners move outwards too: warp onto a canvas padded by the most they can move, so
    # no part of the piece is cut off at the edge (the crop that follows drops the pad).
    pad = int(np.ceil(0.12 * side)) + 1
    shift = np.array([[1, 0, pad], [0, 1, pad], [0, 0, 1]], np.float64)
    warp = shift @ cv2.getPerspectiveTransform(corners, moved)
    return cv2.warpPerspective(canvas, warp, (side + 2 * pad, side + 2 * pad),
                               flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))


@dataclass
class Composite:
    image: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray  # (H, W) uint8 soft alpha
    mask: np.ndarray  # (H, W) uint8 0/1
    params: dict


def compose(rng: np.random.Generator, fg: Foreground, background: np.ndarray,
            spec: SynthSpec, shadow_p: float | None = None
            ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Paste one cut-out on a background: flip, rotate, tilt, scale, place, jitter,
    reflect, shadow (tilts and reflections only when the recipe asks for them).

    ``shadow_p`` overrides ``spec.shadow`` (studio sweeps nearly always show one).
    """
    h, w = background.shape[:2]
    rgba = fg.rgba
    if rng.random() < spec.flip:
        rgba = rgba[:, ::-1]
    angle = float(rng.uniform(-spec.rotation, spec.rotation))
    # Rotate on a canvas big enough to hold the rotated object.
    fh, fw = rgba.shape[:2]
    side = int(np.ceil(np.hypot(fh, fw)))
    canvas = np.zeros((side, side, 4), np.uint8)
    y0, x0 = (side - fh) // 2, (side - fw) // 2
    canvas[y0:y0 + fh, x0:x0 + fw] = rgba
    rot = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    canvas = cv2.warpAffine(canvas, rot, (side, side), flags=cv2.INTER_LINEAR,
                            borderValue=(0, 0, 0, 0))
    # Drawn only when the recipe asks, so every earlier recipe's stream stays as it was.
    tilted = spec.tilt > 0 and rng.random() < spec.tilt
    if tilted:
        canvas = _tilt(canvas, rng)
    ys, xs = np.nonzero(canvas[..., 3] > 10)
    canvas = canvas[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    # Scale so that the opaque area is the drawn fraction of the image.
    target = float(rng.uniform(*spec.area_fraction))
    object_px = float((canvas[..., 3].astype(np.float32) / 255).sum())
    scale = np.sqrt(target * h * w / max(object_px, 1.0))
    scale = min(scale, 0.98 * min(h / canvas.shape[0], w / canvas.shape[1])) \
        if rng.random() >= spec.off_frame else scale
    new = (max(1, int(canvas.shape[1] * scale)), max(1, int(canvas.shape[0] * scale)))
    obj = cv2.resize(canvas, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    oh, ow = obj.shape[:2]
    off_frame = rng.random() < spec.off_frame
    slack_y, slack_x = (oh // 3, ow // 3) if off_frame else (0, 0)
    top = int(rng.integers(-slack_y, max(h - oh + slack_y, -slack_y) + 1))
    left = int(rng.integers(-slack_x, max(w - ow + slack_x, -slack_x) + 1))
    layer = np.zeros((h, w, 4), np.uint8)
    sy0, sx0 = max(0, -top), max(0, -left)
    dy0, dx0 = max(0, top), max(0, left)
    dy1, dx1 = min(h, top + oh), min(w, left + ow)
    if dy1 > dy0 and dx1 > dx0:
        layer[dy0:dy1, dx0:dx1] = obj[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0]
    rgb = _jitter(np.ascontiguousarray(layer[..., :3]), rng, spec)
    alpha = layer[..., 3].astype(np.float32) / 255
    out = background.astype(np.float32)
    # Drawn only when the recipe asks, so every earlier recipe's stream stays as it was.
    reflect = spec.reflection > 0 and rng.random() < spec.reflection
    if reflect:
        rgb = _reflect(rgb, out, rng)
    shadow = rng.random() < (spec.shadow if shadow_p is None else shadow_p)
    if shadow:
        shift = rng.integers(-max(2, w // 40), max(3, w // 40) + 1, size=2)
        soft = cv2.GaussianBlur(np.roll(alpha, tuple(int(s) for s in shift), axis=(0, 1)),
                                (0, 0), max(1.0, w / 100))
        strength = 0.45 if shadow_p is None else float(rng.uniform(0.15, 0.6))
        out *= 1 - strength * soft[..., None]
    out = out * (1 - alpha[..., None]) + rgb.astype(np.float32) * alpha[..., None]
    params = {"angle": round(angle, 3), "target_area": round(target, 4),
              "scale": round(float(scale), 4), "top": top, "left": left,
              "off_frame": bool(off_frame), "shadow": bool(shadow)}
    if reflect:
        params["reflection"] = True
    if tilted:  # recorded only when drawn: earlier manifests stay as they were
        params["tilt"] = True
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), layer[..., 3], params


class Synthesizer:
    """Draws composite ``i`` of a seeded stream; the same (seed, i) always gives the same one."""

    def __init__(self, spec: SynthSpec, foregrounds: Sequence[Foreground],
                 rooms: Sequence[Path] = (), hands: Sequence[Path] = (), seed: int = 0) -> None:
        self.spec = spec
        self.foregrounds = list(foregrounds)
        self.photos = {"rooms": list(rooms), "hands": list(hands)}
        self.seed = seed
        weights = np.array([getattr(spec.mix, k) if k not in self.photos
                            or self.photos[k] else 0.0 for k in KINDS], dtype=np.float64)
        if weights.sum() <= 0:
            raise SeglabError("the background mix gives no background kind a positive share")
        self.weights = weights / weights.sum()

    def __call__(self, index: int) -> Composite:
        rng = np.random.default_rng([self.seed, index])
        kind = KINDS[int(rng.choice(len(KINDS), p=self.weights))]
        size = tuple(self.spec.size)
        if kind == "colour":
            bg = colour_field(rng, size, self.spec)
        elif kind == "shapes":
            bg = shapes_field(rng, size, self.spec)
        elif kind == "studio":
            bg = studio_field(rng, size, self.spec)
        elif kind == "texture":
            bg = texture_field(rng, size, self.spec)
        else:
            bg = photo_background(rng, self.photos[kind], size, self.spec)
        fg_index = int(rng.integers(len(self.foregrounds)))
        fg = self.foregrounds[fg_index]
        shadow_p = 0.85 if kind == "studio" else None
        # Drawn only when the recipe asks, so every earlier recipe's stream stays as it was.
        pair = self.spec.second_piece > 0 and rng.random() < self.spec.second_piece
        spec = self.spec
        if pair:  # two pieces share the area one would have had
            low, high = spec.area_fraction
            spec = spec.model_copy(update={"area_fraction": (low / 2, high / 2)})
        image, alpha, params = compose(rng, fg, bg, spec, shadow_p=shadow_p)
        if pair:  # a pair (the same piece, flipped or not) or a set (another piece)
            other = fg
            if rng.random() >= 0.5 and len(self.foregrounds) > 1:
                k = int(rng.integers(len(self.foregrounds) - 1))  # any piece but the first
                other = self.foregrounds[k + (k >= fg_index)]
            image, alpha2, params2 = compose(rng, other, image, spec, shadow_p=shadow_p)
            # The second piece lies over the first: alpha = a2 + a1 (1 - a2).
            a1, a2 = alpha.astype(np.float32) / 255, alpha2.astype(np.float32) / 255
            alpha = np.clip((a2 + a1 * (1 - a2)) * 255 + 0.5, 0, 255).astype(np.uint8)
            params["second_piece"] = {**params2, "foreground": other.name}
        image = degrade(image, rng, self.spec)
        mask = (alpha > 127).astype(np.uint8)
        params.update({"index": index, "seed": self.seed, "background": kind,
                       "foreground": fg.name, "area_fraction": round(float(mask.mean()), 4)})
        return Composite(image, alpha, mask, params)


_WORKER: Synthesizer | None = None


def _init_worker(synth: Synthesizer) -> None:
    global _WORKER
    _WORKER = synth


def _make_one(args: tuple[int, str]) -> dict:
    index, out = args
    assert _WORKER is not None
    comp = _WORKER(index)
    stem = f"{index:06d}"
    folder = Path(out)
    write_image(folder / "images" / f"{stem}.png", comp.image)
    write_image(folder / "masks" / f"{stem}.png", comp.mask * 255)
    write_image(folder / "alpha" / f"{stem}.png", comp.alpha)
    return comp.params


def generate(synth: Synthesizer, out: str | os.PathLike[str], count: int, workers: int = 1,
             progress: bool = True) -> Path:
    """Write ``count`` composites to ``out/images``, ``masks`` (0/255), ``alpha`` + manifest.

    Work is split over ``workers`` processes; each composite depends only on its
    index, so the output is the same for any number of workers. Composites
    already on disk (from an interrupted run) are kept and not redone.
    """
    from multiprocessing import get_context

    from seglab.progress import bar as progress_bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.jsonl"
    done: dict[int, dict] = {}
    if manifest_path.exists():
        for line in manifest_path.read_text().splitlines():
            rec = json.loads(line)
            if (out / "images" / f"{rec['index']:06d}.png").exists():
                done[rec["index"]] = rec
    todo = [(i, str(out)) for i in range(count) if i not in done]
    bar = progress_bar(total=count, initial=count - len(todo), desc="synth", unit="img",
               disable=not progress)
    if workers > 1 and todo:
        with get_context("fork").Pool(workers, _init_worker, (synth,)) as pool:
            for params in pool.imap_unordered(_make_one, todo, chunksize=4):
                done[params["index"]] = params
                bar.update()
    else:
        _init_worker(synth)
        for item in todo:
            params = _make_one(item)
            done[params["index"]] = params
            bar.update()
    bar.close()
    lines = [json.dumps(done[i], sort_keys=True) for i in sorted(done) if i < count]
    write_text_atomic(manifest_path, "\n".join(lines) + "\n")
    write_text_atomic(out / "synth.json", json.dumps(
        {"count": count, "seed": synth.seed, "spec": synth.spec.model_dump(mode="json"),
         "foregrounds": [f.name for f in synth.foregrounds],
         "photos": {k: len(v) for k, v in synth.photos.items()}}, indent=2))
    return out

