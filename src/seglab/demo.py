"""The main job on a fresh machine, with no outside data: ``seglab demo``.

It generates steel-like strips with four kinds of defect (seeded, so every run
sees the same data), trains the small CPU recipe on them, tunes and documents
the model, evaluates it on held-out strips and predicts them. The generator is
written by hand because no library makes labelled steel textures; it is also a
handy source of test data.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from seglab import rle
from seglab.io import write_image

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


def run_demo(out: Path, images: int = 64) -> dict:
    """Generate, train, tune, evaluate, predict; prints where everything is."""
    import torch

    from seglab.evaluate import document, open_for_model
    from seglab.predict import load_model, predict_files
    from seglab.recipes import load_recipe
    from seglab.train import split_dataset, train

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    started = time.time()
    out = Path(out)
    print(f"[1/8] generating {images} training strips and 12 held-out strips in {out / 'data'}")
    train_dir = make_dataset(out / "data" / "steel", images, seed=1, shape=DEMO_SHAPE)
    holdout_dir = make_dataset(out / "data" / "steel-holdout", 12, seed=2, shape=DEMO_SHAPE)
    recipe = load_recipe("cpu-demo")
    split = split_dataset(recipe, train_dir)
    print(f"[2/8] training {recipe.name} ({recipe.model.arch}/{recipe.model.encoder}) on "
          f"{len(split.train)} strips, validating on {len(split.val)}")
    model_dir = train(recipe, train_dir, out / "run", split=split)
    print("[3/8] tuning thresholds on the validation split, measuring factors, writing the card")
    document(str(model_dir), split.val, dataset_name="validation split of generated strips",
             factors=True, progress=False)
    print("[4/8] evaluating on held-out strips")
    config = load_model(model_dir).config
    metrics = document(str(model_dir), open_for_model(config, str(holdout_dir)),
                       dataset_name="held-out generated strips", tune_first=False,
                       factors=False, out_dir=str(out / "evaluation"), update_model=False,
                       progress=False)
    print("[5/8] predicting the held-out strips")
    summary = predict_files(load_model(model_dir), [holdout_dir / "train_images"],
                            out / "predictions", progress=False)
    cut = run_cutout_demo(out)
    elapsed = time.time() - started
    print(f"\nheld-out mean Dice {metrics['mean_dice']:.4f} (all-empty baseline "
          f"{metrics['all_empty_mean_dice']:.4f}); Dice on defective pairs "
          f"{metrics['mean_dice_defective'] or 0:.4f}; {summary['defective']}/"
          f"{summary['images']} strips called defective; {elapsed:.0f} s")
    print(f"model folder and card:  {model_dir}/README.md")
    print(f"metrics and plots:      {out / 'evaluation'}")
    print(f"overlays and CSV:       {out / 'predictions'}")
    print(f"cut-outs: held-out mean IoU {cut['mean_iou']:.4f}, {cut['accepted_share']:.0%} "
          f"accepted, precision of accepted {_pct(cut['precision_of_accepted'])}")
    print(f"cut-outs, review sheet: {out / 'cutouts'} (review/index.html, review/*.png)")
    print(f"gate report:            {out / 'cutouts' / 'gate-report'}")
    return metrics


def _pct(value: float | None) -> str:
    return "n/a (none accepted)" if value is None else f"{value:.0%}"


def run_cutout_demo(out: Path) -> dict:
    """Background removal on generated jewels: synth, train, cut out, review sheet, gate report."""
    from seglab import synth
    from seglab.cutout import cutout_files, gate_report
    from seglab.datasets import CutoutDataset
    from seglab.io import write_text_atomic
    from seglab.predict import load_model
    from seglab.recipes import load_recipe
    from seglab.report import cutout_card
    from seglab.train import split_dataset, train

    recipe = load_recipe("cpu-demo-cutout")
    spec = recipe.data.synth
    assert spec is not None
    print("[6/8] generating jewels and synthetic composites (colour fields and shapes)")
    jewels = make_jewels(out / "data" / "jewels", 12, seed=3)
    fgs, _ = synth.load_foregrounds(jewels, spec)
    train_dir = synth.generate(synth.Synthesizer(spec, fgs[:10], seed=1),
                               out / "data" / "composites", 192, workers=2, progress=False)
    # Held-out composites use jewels the model never saw.
    held_dir = synth.generate(synth.Synthesizer(spec, fgs[10:], seed=2),
                              out / "data" / "composites-holdout", 24, progress=False)
    split = split_dataset(recipe, train_dir)
    print(f"[7/8] training {recipe.name} on {len(split.train)} composites")
    model_dir = train(recipe, train_dir, out / "run-cutout", split=split)
    predictor = load_model(model_dir)
    val = gate_report(predictor, split.val, model_dir, name="validation composites",
                      progress=False)
    write_text_atomic(model_dir / "README.md", cutout_card(predictor.config, val,
                                                           model_dir.name))
    print("[8/8] cutting out held-out composites: review sheet and gate report")
    cutout_files(predictor, [held_dir / "images"], out / "cutouts", progress=False)
    return gate_report(predictor, CutoutDataset(held_dir), out / "cutouts" / "gate-report",
                       name="held-out composites", progress=False)


METALS = [((212, 175, 55), (255, 230, 140)), ((170, 170, 180), (240, 240, 250)),
          ((183, 110, 121), (240, 190, 190))]


def make_jewel(rng: np.random.Generator, side: int = 256) -> np.ndarray:
    """A generated RGBA jewel (ring, pendant on a chain, or earring), alpha anti-aliased.

    Drawn at twice the size and shrunk, so edges have soft alpha like real cut-outs.
    """
    big = side * 2
    mask = np.zeros((big, big), np.uint8)
    c = big // 2
    kind = int(rng.integers(3))
    if kind == 0:  # ring
        rx, ry = int(rng.integers(big // 5, big // 3)), int(rng.integers(big // 8, big // 4))
        cv2.ellipse(mask, (c, c + big // 10), (rx, ry), 0, 0, 360, 255,
                    int(rng.integers(big // 40, big // 18)))
        gems = [(c, c + big // 10 - ry, int(rng.integers(big // 20, big // 12)))]
    elif kind == 1:  # pendant on a chain
        r = int(rng.integers(big // 4, int(big / 2.4)))
        for t in np.linspace(0.15 * np.pi, 0.85 * np.pi, 40):
            cv2.circle(mask, (int(c + r * np.cos(t)), int(c - big // 4 + r * np.sin(t))),
                       max(2, big // 90), 255, -1)
        gems = [(c, c - big // 4 + r + big // 14, int(rng.integers(big // 14, big // 9)))]
    else:  # drop earring
        cv2.circle(mask, (c, big // 5), big // 30, 255, -1)
        cv2.line(mask, (c, big // 5), (c, big // 2), 255, max(3, big // 80))
        gems = [(c, big // 2 + big // 8, int(rng.integers(big // 10, big // 6)))]
    for gx, gy, gr in gems:
        cv2.circle(mask, (gx, gy), gr, 255, -1)
    dark, light = METALS[int(rng.integers(len(METALS)))]
    shade = np.linspace(0, 1, big, dtype=np.float32)[:, None] * np.ones((1, big), np.float32)
    rgb = (np.asarray(dark, np.float32) * (1 - shade[..., None])
           + np.asarray(light, np.float32) * shade[..., None])
    gem_colour = np.asarray(rng.integers(0, 256, 3), np.float32)
    for gx, gy, gr in gems:
        gem = np.zeros((big, big), np.uint8)
        cv2.circle(gem, (gx, gy), max(2, gr - big // 60), 255, -1)
        rgb[gem > 0] = gem_colour
    rgba = np.dstack([np.clip(rgb, 0, 255).astype(np.uint8), mask])
    return cv2.resize(rgba, (side, side), interpolation=cv2.INTER_AREA)


def make_jewels(folder: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(count):
        write_image(folder / f"jewel_{i:03d}.png", make_jewel(rng))
    return folder
