"""PyTorch datasets for the layouts seglab reads, and the seeded stratified split.

Every dataset yields the same thing: a normalised ``(3, H, W)`` float image, a
``(C, H, W)`` multi-label mask (one channel per class) and ``(C,)`` image-level
labels. Which classes each image holds is known before any image is decoded,
so splits can be stratified and defective images oversampled cheaply.

Layouts:

* :class:`SeverstalDataset`: ``train_images/`` (or images beside the CSV) + a
  label CSV in either layout (:mod:`seglab.data.rle`).
* :class:`MaskFolderDataset`: image + mask files. ``magnetic-tile`` layout
  (``MT_<Class>/Imgs/x.jpg`` + ``x.png``, anti-aliased masks thresholded, the
  class from the folder) or ``images/`` + ``masks/`` with pixel values mapped to
  classes (NEU-Seg).
* :class:`CutoutDataset`: RGBA images (alpha = mask) or image + binary mask
  pairs (``images/`` + ``masks/``), one foreground channel.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data import rle
from seglab.data.images import IMAGE_SUFFIXES, read_image
from seglab.errors import SeglabError
from seglab.recipes import DataSpec, Normalization, Recipe

if TYPE_CHECKING:
    pass



@dataclass(frozen=True)
class Item:
    """One labelled image: where it is, where its mask comes from, which classes it has."""

    image: Path
    mask: Path | None
    classes: tuple[int, ...]
    """0-based indices of the classes present (empty for a defect-free image)."""
    folder_class: int | None = None
    """For layouts where the folder names the class and the mask is binary."""

    @property
    def id(self) -> str:
        return self.image.name


def build_transforms(spec: DataSpec, train: bool) -> A.Compose:
    """Albumentations pipeline from a recipe's data section (augment only when training)."""
    steps: list = []
    if spec.input_size is not None:
        steps.append(A.Resize(*spec.input_size, interpolation=cv2.INTER_AREA))
    if train and spec.crop_size is not None:
        h, w = spec.crop_size
        steps.append(A.PadIfNeeded(min_height=h, min_width=w,
                                   border_mode=cv2.BORDER_REFLECT_101))
        # CropNonEmptyMaskIfExists centres crops on a defect: rare small defects get seen.
        steps.append(A.OneOf([
            A.CropNonEmptyMaskIfExists(height=h, width=w, p=spec.crop_defect_bias),
            A.RandomCrop(height=h, width=w, p=1.0 - spec.crop_defect_bias),
        ], p=1.0) if spec.crop_defect_bias > 0 else A.RandomCrop(height=h, width=w))
    if train:
        aug = spec.augment
        steps += [
            A.HorizontalFlip(p=aug.hflip),
            A.VerticalFlip(p=aug.vflip),
            A.RandomRotate90(p=aug.rotate90),
            A.RandomBrightnessContrast(brightness_limit=aug.brightness_limit,
                                       contrast_limit=aug.contrast_limit,
                                       p=aug.brightness_contrast),
            A.Affine(translate_percent=(-aug.shift_limit, aug.shift_limit),
                     scale=(1 - aug.scale_limit, 1 + aug.scale_limit),
                     border_mode=cv2.BORDER_REFLECT_101, p=aug.shift_scale),
        ]
    # Albumentations keeps its own generator and ignores global seeds: seed it from the
    # recipe (the trainer reseeds it every epoch with set_random_seed).
    return A.Compose(steps, seed=spec.seed)


class SegmentationDataset(Dataset):
    """Base: subclasses list :class:`Item` objects and decode one mask."""

    def __init__(self, items: Sequence[Item], class_names: Sequence[str],
                 spec: DataSpec | None = None, train: bool = False) -> None:
        self.items = list(items)
        self.class_names = list(class_names)
        self.spec = spec
        self.transform = build_transforms(spec, train) if spec is not None else None
        norm = spec.normalization if spec is not None else Normalization()
        self._mean, self._std = norm.on_uint8()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.items)

    def load_mask(self, item: Item, shape: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw ``uint8`` image ``(H, W, 3)`` and mask ``(H, W, C)`` of one item."""
        item = self.items[index]
        image = read_image(item.image)
        mask = self.load_mask(item, image.shape[:2])
        return image, mask

    def subset(self, indices: Sequence[int], train: bool | None = None) -> SegmentationDataset:
        """A dataset over some items, with the train or validation transforms."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.items = [self.items[i] for i in indices]
        if train is not None and self.spec is not None:
            clone.transform = build_transforms(self.spec, train)
        return clone

    def labels(self) -> np.ndarray:
        """``(N, C)`` image-level labels, known without decoding images."""
        out = np.zeros((len(self.items), self.num_classes), dtype=np.float32)
        for i, item in enumerate(self.items):
            out[i, list(item.classes)] = 1.0
        return out

    def __getitem__(self, index: int) -> dict:
        image, mask = self.load(index)
        if self.transform is not None:
            res = self.transform(image=image, mask=mask)
            image, mask = res["image"], res["mask"]
        x = (image.astype(np.float32) - self._mean) / self._std
        mask_t = torch.from_numpy(np.ascontiguousarray(mask.transpose(2, 0, 1))).float()
        return {
            "image": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
            "mask": mask_t,
            "labels": (mask_t.flatten(1).amax(dim=1) > 0).float(),
            "id": self.items[index].id,
        }


class SeverstalDataset(SegmentationDataset):
    """Steel strips with masks from a Severstal label CSV (either layout).

    Images in the folder that the CSV does not name are defect-free (Kaggle's
    convention for the split layout), unless an image-level table says otherwise:
    ``presence`` (default: ``labels_summary.csv`` beside the CSV when there is one;
    columns ``ImageId,has_c1..has_cN``) lists which classes each image shows, and an
    image whose masks do not match it (a class present but no pixels for it) is left
    out, named in ``excluded`` with the reason: pixel metrics must not count it as
    clean. Pass ``ids`` to choose the images yourself (no table is then applied).
    """

    def __init__(self, root: str | os.PathLike[str], csv: str | os.PathLike[str] | None = None,
                 class_names: Sequence[str] = ("defect_1", "defect_2", "defect_3", "defect_4"),
                 ids: Sequence[str] | None = None, spec: DataSpec | None = None,
                 train: bool = False, shape: tuple[int, int] = rle.SEVERSTAL_SHAPE,
                 presence: str | os.PathLike[str] | None = "auto") -> None:
        root = Path(root)
        image_dir = root / "train_images" if (root / "train_images").is_dir() else root
        csv_path = Path(csv) if csv else _find_csv(root)
        self.labels_csv = rle.read_csv(csv_path, num_classes=len(class_names), shape=shape)
        names = list(ids) if ids is not None else sorted(
            p.name for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        items = [Item(image_dir / n, None,
                      tuple(c - 1 for c in self.labels_csv.classes_of(n))) for n in names]
        table = root / "labels_summary.csv" if presence == "auto" else presence
        self.excluded: list[tuple[str, str]] = []
        if ids is None and table and Path(table).is_file():
            shown = _presence(Path(table), len(class_names))
            kept = []
            for it in items:
                want = shown.get(it.id)
                if want is not None and set(want) != set(it.classes):
                    missing = sorted(set(want) - set(it.classes))
                    self.excluded.append((it.id, f"{Path(table).name} lists "
                                          f"{', '.join(class_names[c] for c in missing)} "
                                          f"but {csv_path.name} has no pixels for "
                                          f"{'it' if len(missing) == 1 else 'them'}"))
                else:
                    kept.append(it)
            items = kept
        missing = [it.id for it in items if not it.image.exists()]
        if missing:
            raise SeglabError(f"{len(missing)} images named in {csv_path} are not in {image_dir} "
                              f"(first: {missing[:3]})")
        super().__init__(items, class_names, spec, train)

    def load_mask(self, item: Item, shape: tuple[int, int]) -> np.ndarray:
        masks = self.labels_csv.mask(item.id, shape)  # (C, H, W)
        return np.ascontiguousarray(masks.transpose(1, 2, 0))


def _presence(path: Path, num_classes: int) -> dict[str, tuple[int, ...]]:
    """``ImageId,has_c1..has_cN`` (0/1 per class) -> image id -> classes present."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return {r["ImageId"]: tuple(c for c in range(num_classes)
                                    if int(r[f"has_c{c + 1}"])) for r in rows}
    except (KeyError, ValueError, TypeError) as exc:
        raise SeglabError(f"{path}: expected columns ImageId,has_c1..has_c{num_classes} "
                          f"with 0/1 values ({exc})") from None


def _find_csv(root: Path) -> Path:
    for name in ("train.csv", "train_subset.csv"):
        if (root / name).exists():
            return root / name
    csvs = sorted(p for p in root.glob("*.csv") if p.name != "labels_summary.csv")
    if len(csvs) == 1:
        return csvs[0]
    found = ", ".join(p.name for p in csvs) or "none"
    raise SeglabError(f"no label CSV in {root}: expected train.csv, train_subset.csv or "
                      f"exactly one other .csv (found: {found})")


class MaskFolderDataset(SegmentationDataset):
    """Image + mask file pairs: the magnetic-tile layout or ``images/`` + ``masks/``."""

    def __init__(self, root: str | os.PathLike[str], class_names: Sequence[str],
                 layout: str = "auto", mask_values: dict[int, int] | None = None,
                 mask_threshold: int = 127, spec: DataSpec | None = None,
                 train: bool = False) -> None:
        root = Path(root)
        if not root.is_dir():
            raise SeglabError(f"data folder not found: {root}")
        self.mask_threshold = spec.mask_threshold if spec else mask_threshold
        self.mask_values = (spec.mask_values if spec and spec.mask_values else mask_values) or {
            i + 1: i for i in range(len(class_names))}
        if layout == "auto":
            layout = "magnetic-tile" if any(root.glob("MT_*/Imgs")) else "images-masks"
        self.layout = layout
        items = (_scan_magnetic_tile(root, class_names, self.mask_threshold)
                 if layout == "magnetic-tile"
                 else _scan_images_masks(root, self.mask_values))
        if not items:
            raise SeglabError(f"no image/mask pairs found in {root} ({layout} layout)")
        super().__init__(items, class_names, spec, train)

    def load_mask(self, item: Item, shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros((*shape, self.num_classes), dtype=np.uint8)
        if item.mask is None:
            return out
        raw = read_image(item.mask, mode="L")
        if raw.shape != shape:
            raise SeglabError(f"mask {item.mask} is {raw.shape[1]}x{raw.shape[0]} but its image "
                              f"is {shape[1]}x{shape[0]}")
        if item.folder_class is not None:
            out[..., item.folder_class] = raw > self.mask_threshold
        else:
            for value, cls in self.mask_values.items():
                out[..., cls] = raw == value
        return out


def _scan_magnetic_tile(root: Path, class_names: Sequence[str], threshold: int) -> list[Item]:
    index = {name.lower(): i for i, name in enumerate(class_names)}
    items = []
    for folder in sorted(root.glob("MT_*")):
        cls_name = folder.name[3:].lower()
        cls = index.get(cls_name)
        if cls is None and cls_name != "free":
            raise SeglabError(f"folder {folder.name} names class {cls_name!r}, not one of "
                              f"{list(class_names)} (MT_Free is defect-free)")
        for img in sorted((folder / "Imgs").glob("*.jpg")):
            mask = img.with_suffix(".png")
            has = ()
            if cls is not None and mask.exists():
                # Read once at scan time so the split knows which images truly have a defect.
                has = (cls,) if (read_image(mask, mode="L") > threshold).any() else ()
            items.append(Item(img, mask if mask.exists() else None, has, cls))
    return items


def _scan_images_masks(root: Path, mask_values: dict[int, int]) -> list[Item]:
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise SeglabError(f"{root} needs images/ and masks/ folders")
    items = []
    for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        mask = mask_dir / f"{img.stem}.png"
        if not mask.exists():
            raise SeglabError(f"image {img.name} has no mask {mask}")
        values = np.unique(read_image(mask, mode="L"))
        has = tuple(sorted({mask_values[int(v)] for v in values if int(v) in mask_values}))
        items.append(Item(img, mask, has))
    return items


class CutoutDataset(SegmentationDataset):
    """Foreground/background pairs: RGBA files (alpha is the mask) or images/ + masks/."""

    def __init__(self, root: str | os.PathLike[str], spec: DataSpec | None = None,
                 train: bool = False, alpha_threshold: int = 127) -> None:
        root = Path(root)
        self.alpha_threshold = alpha_threshold
        if (root / "images").is_dir() and (root / "masks").is_dir():
            items = [Item(p, root / "masks" / f"{p.stem}.png", (0,))
                     for p in sorted((root / "images").iterdir())
                     if p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            items = [Item(p, None, (0,)) for p in sorted(root.rglob("*.png"))]
        if not items:
            raise SeglabError(f"no cut-out pairs or RGBA images found in {root}")
        super().__init__(items, ["foreground"], spec, train)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        item = self.items[index]
        if item.mask is None:
            rgba = read_image(item.image, mode="RGBA")
            return (np.ascontiguousarray(rgba[..., :3]),
                    (rgba[..., 3:] > self.alpha_threshold).astype(np.uint8))
        image = read_image(item.image)
        mask = read_image(item.mask, mode="L")
        return image, (mask[..., None] > self.alpha_threshold).astype(np.uint8)


def stratified_split(classes: Sequence[tuple[int, ...]], val_fraction: float,
                     seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/validation split stratified by which classes each image has.

    Images are grouped by their exact class set; each group contributes
    ``round(val_fraction * size)`` images to validation (at least one when the
    group has two or more), so rare class combinations appear on both sides.
    """
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, key in enumerate(classes):
        groups.setdefault(tuple(sorted(key)), []).append(i)
    train, val = [], []
    for key in sorted(groups):
        members = np.array(groups[key])
        rng.shuffle(members)
        n_val = round(val_fraction * len(members))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.extend(members[:n_val].tolist())
        train.extend(members[n_val:].tolist())
    return sorted(train), sorted(val)


def sample_weights(dataset: SegmentationDataset, defect_oversample: float) -> np.ndarray:
    """Per-item sampling weights: an image with any class weighs ``defect_oversample``."""
    has = np.array([bool(item.classes) for item in dataset.items])
    return np.where(has, defect_oversample, 1.0)


def open_dataset(recipe: Recipe, root: str | os.PathLike[str],
                 ids: Sequence[str] | None = None) -> SegmentationDataset:
    """The dataset a recipe's ``data.format`` names, over ``root`` (no transforms yet)."""
    spec, names = recipe.data, recipe.model.classes
    fmt = spec.format
    if fmt == "severstal":
        return SeverstalDataset(root, class_names=names, ids=ids, spec=spec)
    if fmt in ("magnetic-tile", "mask-folder"):
        layout = "magnetic-tile" if fmt == "magnetic-tile" else "images-masks"
        dataset: SegmentationDataset = MaskFolderDataset(root, names, layout=layout, spec=spec)
    elif fmt == "cutout":
        dataset = CutoutDataset(root, spec=spec)
    else:
        raise SeglabError(f"data format {fmt!r} has no folder dataset; use seglab.data.synth "
                          "for it")
    if ids is not None:
        wanted = set(ids)
        unknown = wanted - {it.id for it in dataset.items}
        if unknown:
            raise SeglabError(f"{len(unknown)} requested images are not in {root} "
                              f"(first: {sorted(unknown)[:3]})")
        dataset = dataset.subset([i for i, it in enumerate(dataset.items) if it.id in wanted])
    return dataset

