"""The main job on a fresh machine: ``seglab demo``.

Part 1 is a plumbing example: it generates steel-like strips with four kinds of
defect (seeded, so every run sees the same data), trains the small CPU recipe on
them, tunes and documents the model, evaluates it on held-out strips and predicts
them. Part 2 runs the zoo's ready models on photos they never saw. The generator is
written by hand because no library makes labelled steel textures; it is also a
handy source of test data.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np

from seglab.data import rle
from seglab.data.images import write_image
from seglab.errors import SeglabError

if TYPE_CHECKING:
    from seglab.cutout.batch import CutoutSummary

STRIP_SHAPE = (256, 1600)
DEMO_SHAPE = (128, 800)
"""The demo's strips are half the Severstal size, so training fits in minutes on a CPU."""


def _texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Rolled-steel look: a grey level, horizontal streaks along the rolling direction, grain."""
    height, width = shape
    base = rng.uniform(80, 140)
    rows = cv2.GaussianBlur(rng.normal(0, 6, (height, 1)).astype(np.float32), (1, 9), 0)
    streaks = np.repeat(rows, width, axis=1)
    grain = cv2.GaussianBlur(rng.normal(0, 5, shape).astype(np.float32), (0, 0), 1.0)
    shade = np.linspace(rng.uniform(-10, 10), rng.uniform(-10, 10), width, dtype=np.float32)
    return base + streaks + grain + shade[None, :]


def _defect(rng: np.random.Generator, cls: int, shape: tuple[int, int]
            ) -> tuple[np.ndarray, float]:
    """A mask for one defect of class ``cls`` (0-based) and the intensity change it causes."""
    height, width = shape
    mask = np.zeros(shape, np.uint8)
    cx, cy = int(rng.integers(60, width - 60)), int(rng.integers(30, height - 30))
    if cls == 0:  # pitting: a cluster of small dark pits
        for _ in range(int(rng.integers(6, 14))):
            x = int(np.clip(cx + rng.normal(0, 25), 0, width - 1))
            y = int(np.clip(cy + rng.normal(0, 12), 0, height - 1))
            cv2.ellipse(mask, (x, y), (int(rng.integers(3, 7)), int(rng.integers(2, 5))),
                        0, 0, 360, 1, -1)
        return mask, -55.0
    if cls == 1:  # short bright vertical scratches
        for _ in range(int(rng.integers(2, 4))):
            x = int(np.clip(cx + rng.normal(0, 20), 5, width - 5))
            y0 = int(rng.integers(10, height // 2))
            cv2.line(mask, (x, y0), (x + int(rng.integers(-8, 8)), y0 + int(rng.integers(60, 120))),
                     1, int(rng.integers(4, 7)))
        return mask, 60.0
    if cls == 2:  # long dark diagonal scratch
        length = int(rng.integers(150, 400))
        angle = rng.uniform(-0.5, 0.5)
        dx, dy = int(length * np.cos(angle)), int(length * np.sin(angle))
        cv2.line(mask, (cx - dx // 2, cy - dy // 2), (cx + dx // 2, cy + dy // 2), 1,
                 int(rng.integers(6, 12)))
        return mask, -45.0
    # class 3: a large dark blotch
    cv2.ellipse(mask, (cx, cy), (int(rng.integers(40, 110)), int(rng.integers(25, 70))),
                float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask, -40.0


def make_strip(rng: np.random.Generator, shape: tuple[int, int] = STRIP_SHAPE,
               defect_probability: float = 0.65) -> tuple[np.ndarray, np.ndarray]:
    """One strip ``(H, W, 3)`` and its ``(4, H, W)`` masks."""
    image = _texture(rng, shape)
    masks = np.zeros((4, *shape), np.uint8)
    if rng.random() < defect_probability:
        for cls in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
            mask, delta = _defect(rng, int(cls), shape)
            soft = cv2.GaussianBlur(mask.astype(np.float32), (5, 5), 0)
            image = image + delta * soft
            masks[cls] |= mask
    grey = np.clip(image, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), masks


def make_dataset(folder: Path, count: int, seed: int,
                 shape: tuple[int, int] = STRIP_SHAPE) -> Path:
    """Write a Severstal-layout folder: ``train_images/*.jpg`` + ``train.csv`` (split layout)."""
    rng = np.random.default_rng(seed)
    rles: dict[str, dict[int, str]] = {}
    names = []
    for i in range(count):
        image, masks = make_strip(rng, shape)
        name = f"strip{seed:03d}_{i:04d}.jpg"
        write_image(folder / "train_images" / name, image, quality=92)
        names.append(name)
        rles[name] = {c + 1: rle.encode(m) for c, m in enumerate(masks) if m.any()}
    rle.write_csv(folder / "train.csv", rles, layout="split", images=names)
    return folder


def run_demo(out: Path, images: int = 64, steel_data: Path | None = None,
             scenes_data: Path | None = None) -> dict:
    """A plumbing example (train on generated strips), then the zoo on real photos.

    ``steel_data`` is a NEU-Seg folder (``images/`` + ``masks/``) for the steel zoo
    model and ``scenes_data`` a folder of jewellery photos for the cut-out one; ``None``
    looks for ``../shared/data/neu-seg`` and ``../shared/data/jewellery-scenes`` and
    skips that part without them (neither may be shipped).
    """
    import torch

    from seglab.defects.batch import predict_files
    from seglab.defects.evaluate import document, open_for_model
    from seglab.infer.predictor import load_model
    from seglab.recipes import load_recipe
    from seglab.training.run import fit
    from seglab.training.trainer import split_dataset

    # A folder named by the user and missing is an error before two minutes of training,
    # not a step skipped at the end.
    _shared_folder(scenes_data, SCENES)
    _shared_folder(steel_data, NEU_SEG)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    started = time.time()
    out = Path(out)
    print("Part 1, plumbing example: a small U-Net trained for two minutes on generated "
          "strips. It shows the pipeline, not a model to use; part 2 runs the zoo's.")
    print(f"[1/8] generating {images} training strips and 12 held-out strips in {out / 'data'}")
    train_dir = make_dataset(out / "data" / "steel", images, seed=1, shape=DEMO_SHAPE)
    holdout_dir = make_dataset(out / "data" / "steel-holdout", 12, seed=2, shape=DEMO_SHAPE)
    recipe = load_recipe("cpu-demo")
    split = split_dataset(recipe, train_dir)
    print(f"[2/8] training {recipe.name} ({recipe.model.arch}/{recipe.model.encoder}) on "
          f"{len(split.train)} strips, validating on {len(split.val)}")
    print("[3/8] then tuning thresholds on the validation split, measuring factors, writing "
          "the card")
    model_dir = fit(recipe, train_dir, out / "run", split=split, factors=True,
                    dataset_name="validation split of generated strips").model_dir
    print("[4/8] evaluating on held-out strips")
    config = load_model(model_dir).config
    metrics = document(str(model_dir), open_for_model(config, str(holdout_dir)),
                       dataset_name="held-out generated strips", tune_first=False,
                       factors=False, out_dir=str(out / "evaluation"), update_model=False,
                       progress=False)
    print("[5/8] predicting the held-out strips")
    summary = predict_files(load_model(model_dir), [holdout_dir / "train_images"],
                            out / "predictions", progress=False)
    print("Part 2, the zoo: ready models trained by seglab, on photos they never saw.")
    cut = run_zoo_cutout(out / "zoo-cutout")
    scenes = run_zoo_scenes(out / "zoo-scenes", scenes_data)
    steel = run_zoo_steel(out / "zoo-steel", steel_data)
    elapsed = time.time() - started
    print(f"\nplumbing example: held-out mean Dice {metrics['mean_dice']:.4f} (all-empty "
          f"{metrics['all_empty_mean_dice']:.4f}); {summary['defective']}/"
          f"{summary['images']} generated strips called defective; {elapsed:.0f} s in all")
    print(f"  model folder and card:  {model_dir}/README.md")
    print(f"  metrics and plots:      {out / 'evaluation'}")
    print(f"  overlays and CSV:       {out / 'predictions'}")
    print(f"zoo jewellery-cutout on {cut['images']} sample photos: mean IoU "
          f"{cut['mean_iou']:.4f}, {cut['accepted_share']:.0%} accepted, precision of "
          f"accepted {_pct(cut['precision_of_accepted'])}")
    print(f"  cut-outs, review sheet: {out / 'zoo-cutout'} (review/index.html, review/*.png)")
    if scenes is not None:
        unread = f", {len(scenes.errors)} unreadable (skipped)" if scenes.errors else ""
        print(f"zoo jewellery-cutout on {scenes.images} real jewellery photos (no masks): "
              f"{scenes.accepted} accepted, shown to a person as cut-outs{unread}")
        print(f"  cut-outs, review sheet: {out / 'zoo-scenes'} (cutouts/ holds the accepted "
              "ones only; review/index.html)")
    else:
        print("zoo jewellery-cutout on real photos: skipped (no jewellery-scenes folder; "
              "pass --scenes-data)")
    if steel is not None:
        print(f"zoo steel-defects on {steel['images']} NEU-Seg strips it never trained on: "
              f"{steel['defective']} called defective")
        print(f"  overlays and CSV:       {out / 'zoo-steel'}")
    else:
        print("zoo steel-defects: skipped (no NEU-Seg folder; pass --steel-data)")
    return metrics


def samples_folder() -> Path:
    """The sample photos shipped inside the package (see ``samples/NOTICE.md``)."""
    from importlib import resources

    return Path(str(resources.files("seglab") / "samples"))


def run_zoo_cutout(out: Path) -> dict:
    """The zoo's cut-out model on the shipped sample photos: cut-outs, review sheet, and
    the gate report against the photos' true masks."""
    from seglab.cutout.batch import cutout_files, gate_report
    from seglab.data.datasets import CutoutDataset
    from seglab.infer.predictor import load_model
    from seglab.models import zoo

    photos = samples_folder() / "jewellery"
    print(f"[6/8] zoo {zoo.DEFAULT_CUTOUT} on the sample photos in {photos}")
    predictor = load_model(zoo.DEFAULT_CUTOUT)
    cutout_files(predictor, [photos / "images"], out, progress=False)
    return gate_report(predictor, CutoutDataset(photos), out / "gate-report",
                       name="seglab sample photos", progress=False)


class SharedFolder(NamedTuple):
    """Data the demo reads when there and may not ship."""

    default: Path
    probe: str  # what must be in it
    what: str  # what it is called in an error
    option: str  # the option that names another


SCENES = SharedFolder(Path("../shared/data/jewellery-scenes"), ".", "folder", "--scenes-data")
NEU_SEG = SharedFolder(Path("../shared/data/neu-seg"), "images",
                       "NEU-Seg folder (images/ + masks/)", "--steel-data")


def _shared_folder(data: Path | None, kind: SharedFolder) -> Path | None:
    """``data`` or the default folder, ``None`` when the default is not there; a folder
    the user named and is missing is an error."""
    if data is not None:
        if not (Path(data) / kind.probe).is_dir():
            raise SeglabError(f"no {kind.what} at {data} ({kind.option})")
        return Path(data)
    return kind.default if (kind.default / kind.probe).is_dir() else None


def run_zoo_scenes(out: Path, data: Path | None) -> CutoutSummary | None:
    """The zoo's cut-out model on real jewellery photos, which have no true masks: what a
    person would be shown (``cutouts/`` holds only the accepted ones), and the review
    sheet with the gate's verdict and reason for each."""
    from seglab.cutout.batch import cutout_files
    from seglab.infer.predictor import load_model
    from seglab.models import zoo

    data = _shared_folder(data, SCENES)
    if data is None:
        print(f"[7/8] zoo {zoo.DEFAULT_CUTOUT} on real photos: skipped (no {SCENES.default})")
        return None
    print(f"[7/8] zoo {zoo.DEFAULT_CUTOUT} on the real photos in {data}")
    return cutout_files(load_model(zoo.DEFAULT_CUTOUT), [data], out, progress=False)


def run_zoo_steel(out: Path, data: Path | None) -> dict | None:
    """The zoo's steel model on NEU-Seg strips from its recipe's validation split."""
    from seglab.defects.batch import predict_files
    from seglab.infer.predictor import load_model
    from seglab.models import zoo
    from seglab.recipes import load_recipe
    from seglab.training.trainer import split_dataset

    data = _shared_folder(data, NEU_SEG)
    if data is None:
        print(f"[8/8] zoo {zoo.DEFAULT_DEFECTS}: skipped (no {NEU_SEG.default})")
        return None
    items = split_dataset(load_recipe(zoo.DEFAULT_DEFECTS), data).val.items[:12]
    print(f"[8/8] zoo {zoo.DEFAULT_DEFECTS} on {len(items)} NEU-Seg strips from {data}")
    return predict_files(load_model(zoo.DEFAULT_DEFECTS), [str(i.image) for i in items], out,
                         progress=False)


def _pct(value: float | None) -> str:
    return "n/a (none accepted)" if value is None else f"{value:.0%}"
