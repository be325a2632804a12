"""Running a saved model: ``seglab.load_model(path)`` gives a ready :class:`Predictor`.

Data flows one way: read image -> resize and normalise -> model -> probabilities
at the original resolution -> post-process (thresholds, areas, classifier) -> masks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from seglab import modelfolder
from seglab.backends import Backend, TorchBackend
from seglab.io import read_image
from seglab.models import SegmentationNet
from seglab.postprocess import binarize


@dataclass
class Prediction:
    """What a model says about one image, at the image's own resolution."""

    probs: np.ndarray
    """``(C, H, W)`` float32 pixel probabilities."""
    class_probs: np.ndarray
    """``(C,)`` image-level probability per class (aux head, or max pixel probability)."""
    masks: np.ndarray
    """``(C, H, W)`` uint8 masks after thresholds, minimum areas and classifier gating."""
    class_names: list[str]

    @property
    def areas(self) -> dict[str, int]:
        return {n: int(m.sum()) for n, m in zip(self.class_names, self.masks, strict=True)}

    @property
    def classes_found(self) -> list[str]:
        return [n for n, m in zip(self.class_names, self.masks, strict=True) if m.any()]

    @property
    def defect_score(self) -> float:
        """Probability that the image shows any class: the highest image-level probability."""
        return float(self.class_probs.max()) if self.class_probs.size else 0.0


class Predictor:
    """A model with its pre- and post-processing, ready to run on images."""

    def __init__(self, net: SegmentationNet, config: modelfolder.ModelConfig,
                 device: str | torch.device = "cpu", backend: Backend | None = None,
                 input_size: Sequence[int] | None = None) -> None:
        self.net = net.to(device).eval()
        self.config = config
        self.input_size = tuple(input_size or config.input_size or ()) or None
        """``(h, w)`` the network sees; ``None``: each image's own size. An exported
        backend has the fixed size it was exported at (``seglab export --size``)."""
        self.device = torch.device(device)
        self.backend: Backend = backend or TorchBackend(self.net, device=self.device)
        """Runs the network: PyTorch fp32 unless an exported, checked backend was chosen."""
        self.tta = False
        """Average over horizontal and vertical flips (slower, usually a little better)."""
        norm = config.normalization
        self._mean = np.asarray(norm.mean, dtype=np.float32) * 255.0
        self._std = np.asarray(norm.std, dtype=np.float32) * 255.0

    @property
    def class_names(self) -> list[str]:
        return self.config.class_names

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """Resize to the model's input size (if it has one) and normalise to ``(3, h, w)``."""
        return preprocess(image, self.input_size, self._mean, self._std)

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the backend on a preprocessed ``(N, 3, h, w)`` batch; returns probabilities."""
        views = [(), (3,), (2,)] if self.tta else [()]
        probs = cls = None
        for axes in views:
            x = np.ascontiguousarray(np.flip(batch, axes)) if axes else batch
            logits, cls_logits = self.backend(x)
            p = _sigmoid(np.flip(logits, axes) if axes else logits)
            c = _sigmoid(cls_logits)
            probs = p if probs is None else probs + p
            cls = c if cls is None else cls + c
        assert probs is not None and cls is not None
        return probs / len(views), cls / len(views)

    def probabilities(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Pixel and image-level probabilities for each image, at its own resolution."""
        if not images:
            return []
        prepped = [self.preprocess(img) for img in images]
        shapes = {p.shape for p in prepped}
        if len(shapes) == 1:
            outs = [self.forward(np.stack(prepped))]
            probs, cls = outs[0]
            pairs = list(zip(probs, cls, strict=True))
        else:  # images of different sizes and no fixed input size: one at a time
            pairs = []
            for p in prepped:
                probs, cls = self.forward(p[None])
                pairs.append((probs[0], cls[0]))
        return [(_resize_probs(p, img.shape[:2]), c) for (p, c), img in zip(pairs, images,
                                                                            strict=True)]

    def predict(self, image: np.ndarray | str | os.PathLike[str]) -> Prediction:
        """Predict one image (array or path)."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Iterable[np.ndarray | str | os.PathLike[str]]
                      ) -> list[Prediction]:
        arrays = [img if isinstance(img, np.ndarray) else read_image(img) for img in images]
        out = []
        for probs, cls in self.probabilities(arrays):
            masks = binarize(probs, cls, self.config.postprocess)
            out.append(Prediction(probs, cls, masks, self.class_names))
        return out


def preprocess(image: np.ndarray, size: Sequence[int] | None, mean: np.ndarray,
               std: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> normalised ``(3, h, w)`` float32 at ``size`` (if given)."""
    if size is not None and image.shape[:2] != tuple(size):
        # INTER_AREA, exactly as the training transforms resize (datasets.py).
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    x = (image.astype(np.float32) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _resize_probs(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Probabilities at the image's resolution, interpolated as logits.

    Interpolating probabilities turns every edge between a sure inside (p ~ 1) and a
    sure outside (p ~ 0) into a linear ramp as wide as one model pixel is in the
    photo (5 photo pixels for a 224-pixel model on a 1100-pixel photo), so a clean,
    confident mask has a band of p = 0.5-0.9 along all its edges, and the gate's mean
    probability inside falls with the edge length (thin chains most). Interpolating
    logits, as segmentation libraries do before their softmax, keeps the same 0.5
    boundary but a transition as sharp as the model's own.
    """
    if probs.shape[1:] == tuple(shape):
        return probs
    height, width = shape
    eps = np.float32(1e-6)
    p = np.clip(probs, eps, 1 - eps)
    logits = np.log(p) - np.log1p(-p)
    # cv2 resizes up to 512 channels at once when they are last.
    resized = cv2.resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), (width, height),
                         interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    return np.ascontiguousarray(_sigmoid(resized).transpose(2, 0, 1))


def load_model(path: str | os.PathLike[str], device: str = "cpu", backend: str = "torch"
               ) -> Predictor:
    """Load a model folder or a zoo model (``"jewellery-cutout"``) into a :class:`Predictor`.

    ``backend`` names one of :data:`seglab.backends.NAMES`, or ``"auto"`` for the
    fastest one that passed ``seglab export``'s agreement check.
    """
    from seglab import backends, zoo

    folder = zoo.resolve(path)
    net, config = modelfolder.load_net(folder)
    record = backends.read_checks(folder)
    name = backends.choose(folder, backend, record) if device == "cpu" else backend
    name = name if name != "auto" else "torch"
    runner = backends.open_backend(name, net, folder, device)
    exported = record.get("input_shape") if name in backends.FILES else None
    return Predictor(net, config, device=device, backend=runner,
                     input_size=exported[1:] if exported else None)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -80, 80).astype(np.float32)))).astype(np.float32)


def predict_files(predictor: Predictor, inputs: Sequence[str | os.PathLike[str]],
                  out: str | os.PathLike[str], *, layout: str = "split", batch_size: int = 8,
                  write_masks: bool = True, write_overlays: bool = True,
                  progress: bool = True, workers: int = 0, resume: bool = False) -> dict:
    """Predict files, folders or globs and write every output at the original resolution.

    Streams: images are decoded (in ``workers`` processes when > 0) while the model
    runs, and each batch's outputs are written before the next is read, so memory
    stays bounded for any number of images. Writes ``masks/<image>_<class>.png``,
    ``overlays/<image>.png``, one line per image in ``summary.jsonl``, then
    ``submission.csv`` (Severstal layout ``split`` or ``combined``), ``summary.csv``
    and ``summary.json`` (counts and errors). A file that cannot be read is reported
    in ``errors`` and skipped. ``resume=True`` skips images already in
    ``summary.jsonl`` (after a kill, say).
    """
    import csv
    import json

    from tqdm import tqdm

    from seglab import rle
    from seglab.io import (
        JsonLines,
        atomic_write,
        image_batches,
        list_images,
        output_names,
        write_image,
        write_text_atomic,
    )
    from seglab.report import overlay

    out = Path(out)
    names = predictor.class_names
    log = JsonLines(out / "summary.jsonl", resume=resume)
    every = list_images(*inputs)
    stems = output_names(every)
    paths = log.pending(every)
    errors: list[dict] = []
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress)
    skipped = 0
    try:
        for good in image_batches(paths, batch_size, errors, workers=workers,
                                  report=bar.write):
            preds = predictor.predict_batch([img for _, img in good]) if good else []
            rows = []
            for (path, image), pred in zip(good, preds, strict=True):
                codes = {}
                for c, mask in enumerate(pred.masks):
                    if mask.any():
                        codes[str(c + 1)] = rle.encode(mask)
                        if write_masks:
                            write_image(out / "masks" / f"{stems[path]}_{names[c]}.png",
                                        mask * 255)
                if write_overlays:
                    write_image(out / "overlays" / f"{stems[path]}.png",
                                overlay(image, pred.masks))
                row = {
                    "image": path.name, "path": str(path), "width": image.shape[1],
                    "height": image.shape[0], "defective": bool(pred.classes_found),
                    "defect_score": round(pred.defect_score, 4),
                    "classes_found": pred.classes_found, "area": pred.areas,
                    "class_probability": {n: round(float(p), 4)
                                          for n, p in zip(names, pred.class_probs, strict=True)},
                    "max_pixel_probability": {n: round(float(p.max()), 4)
                                              for n, p in zip(names, pred.probs, strict=True)},
                    "rle": codes,
                }
                rows.append(row)
                if progress:
                    bar.write(f"{row['image']}: is defect: [{row['defect_score']:.2f}] "
                              f"{'defective' if row['defective'] else 'normal'} "
                              f"{', '.join(row['classes_found'])}")
            log.append(rows)  # after the row's files: a listed image is complete
            bar.update(len(good) + len(errors) - skipped)
            skipped = len(errors)
    finally:
        bar.close()
        log.close()
    images = defective = 0
    with atomic_write(out / "submission.csv", "w") as sub, \
            atomic_write(out / "summary.csv", "w") as table:
        rle.write_header(sub, layout)  # type: ignore[arg-type]
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["image", "defective", "defect_score", "classes_found",
                         *[f"area_{n}" for n in names], *[f"prob_{n}" for n in names]])
        for r in log.rows():
            images += 1
            defective += r["defective"]
            rle.write_rows(sub, r["image"], {int(k): v for k, v in r["rle"].items()},
                           layout=layout, num_classes=len(names))  # type: ignore[arg-type]
            writer.writerow([r["image"], int(r["defective"]), r["defect_score"],
                             " ".join(r["classes_found"]), *[r["area"][n] for n in names],
                             *[r["class_probability"][n] for n in names]])
    summary = {"model": predictor.config.display_name, "images": images, "errors": errors,
               "defective": defective, "results": "summary.jsonl"}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


