from __future__ import annotations

import numpy as np
import pytest

from seglab.data import rle
from seglab.data.datasets import (
    CutoutDataset,
    MaskFolderDataset,
    SeverstalDataset,
    sample_weights,
    stratified_split,
)
from seglab.recipes import load_recipe


def test_stratified_split_is_seeded_and_covers_every_group():
    classes = [()] * 50 + [(0,)] * 10 + [(1,)] * 6 + [(0, 1)] * 2 + [(2,)]
    train, val = stratified_split(classes, 0.2, seed=3)
    assert sorted(train + val) == list(range(len(classes)))
    assert not set(train) & set(val)
    assert (train, val) == stratified_split(classes, 0.2, seed=3)
    assert val != stratified_split(classes, 0.2, seed=4)[1]
    val_sets = [classes[i] for i in val]
    assert val_sets.count(()) == 10 and val_sets.count((0,)) == 2
    assert val_sets.count((1,)) == 1 and val_sets.count((0, 1)) == 1
    assert (2,) not in val_sets  # a single image stays in training


def _summary(folder):
    import csv

    with (folder / "labels_summary.csv").open() as f:
        return {r["ImageId"]: [int(r[f"has_c{c}"]) for c in range(1, 5)]
                for r in csv.DictReader(f)}


def test_severstal_folder_real_data(shared_data):
    folder = shared_data / "severstal-labelled"
    summary = _summary(folder)
    truth = rle.read_csv(folder / "train_subset.csv")
    ds = SeverstalDataset(folder)  # images whose masks match labels_summary.csv
    # Kept: exactly the images whose classes with pixel masks are the classes the table
    # lists; the others show defects that have no masks here, so they are left out.
    complete = sorted(n for n, has in summary.items()
                      if [int(c in truth.classes_of(n)) for c in range(1, 5)] == has)
    assert [it.id for it in ds.items] == complete and len(complete) == 9
    assert sorted(i for i, _ in ds.excluded) == sorted(set(summary) - set(complete))
    assert all("labels_summary.csv lists" in why for _, why in ds.excluded)
    np.testing.assert_array_equal(ds.labels(), [summary[n] for n in complete])
    first = next(i for i, it in enumerate(ds.items) if it.classes)
    image, mask = ds.load(first)
    assert image.shape == (256, 1600, 3) and mask.shape == (256, 1600, 4)
    name = ds.items[first].id
    for c in ds.items[first].classes:
        assert mask[..., c].sum() == rle.decode(truth.rles[name][c + 1]).sum()
    recipe = load_recipe("severstal-unet-r50")
    ds = SeverstalDataset(folder, spec=recipe.data, train=True)
    sample = ds[first]
    assert sample["image"].shape == (3, 128, 800) and sample["mask"].shape == (4, 128, 800)
    assert sample["labels"].tolist() == summary[name]
    weights = sample_weights(ds, 2.0).tolist()
    assert weights == [2.0 if any(summary[n]) else 1.0 for n in complete]
    everything = SeverstalDataset(folder, ids=sorted(summary))  # ids: the caller decides
    assert len(everything) == 20 and not everything.excluded


def test_severstal_combined_layout(tmp_path):
    from seglab.data.images import write_image

    (tmp_path / "train_images").mkdir()
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "train_images" / name, np.zeros((8, 16, 3), np.uint8))
    rle.write_csv(tmp_path / "train.csv", {"a.png": {2: "1 8"}}, layout="combined",
                  images=["a.png", "b.png"])
    ds = SeverstalDataset(tmp_path, shape=(8, 16))
    _image, mask = ds.load(0)
    assert mask[:, 0, 1].all() and mask.sum() == 8
    assert [it.classes for it in ds.items] == [(1,), ()]


def test_magnetic_tile_layout(shared_data):
    recipe = load_recipe("magnetic-tile")
    ds = MaskFolderDataset(shared_data / "magnetic-tile", recipe.model.classes,
                           layout="magnetic-tile")
    assert len(ds) == 924
    crack = next(i for i, it in enumerate(ds.items) if it.folder_class == 2 and it.classes)
    image, mask = ds.load(crack)
    assert mask.shape[:2] == image.shape[:2] and mask.shape[2] == 5
    assert mask[..., 2].any() and not mask[..., [0, 1, 3, 4]].any()
    assert set(np.unique(mask)) <= {0, 1}  # anti-aliased grey levels were thresholded
    free = [it for it in ds.items if "MT_Free" in str(it.image)]
    assert free and all(it.classes == () for it in free)


def test_neu_seg_value_masks(shared_data):
    recipe = load_recipe("neu-seg")
    ds = MaskFolderDataset(shared_data / "neu-seg", recipe.model.classes,
                           mask_values={1: 0, 2: 1, 3: 2})
    assert len(ds) == 322
    i = next(i for i, it in enumerate(ds.items) if it.classes)
    image, mask = ds.load(i)
    assert image.shape == (200, 200, 3) and mask.shape == (200, 200, 3)
    present = [c for c in range(3) if mask[..., c].any()]
    assert tuple(present) == ds.items[i].classes


def test_cutout_pairs(shared_data):
    ds = CutoutDataset(shared_data / "ecssd")
    image, mask = ds.load(0)
    assert mask.shape == (*image.shape[:2], 1) and 0 < mask.mean() < 1
    rgba = CutoutDataset(shared_data / "jewellery-cutouts")
    image, mask = rgba.load(0)
    assert image.shape[2] == 3 and mask.any() and not mask.all()


def test_missing_image_named_in_csv_is_reported(tmp_path):
    rle.write_csv(tmp_path / "train.csv", {"gone.png": {1: "1 2"}})
    with pytest.raises(ValueError, match=r"1 images named in .* are not in"):
        SeverstalDataset(tmp_path, ids=["gone.png"])


def test_quarter_turns_move_image_and_mask_together():
    from seglab.data.datasets import build_transforms
    from seglab.recipes import Augment, DataSpec

    still = {"hflip": 0.0, "vflip": 0.0, "brightness_contrast": 0.0, "shift_scale": 0.0}
    spec = DataSpec(format="mask-folder", input_size=(32, 32),
                    augment=Augment(rotate90=1.0, **still))
    image = np.zeros((32, 32, 3), np.uint8)
    image[0, 1] = 255  # one marked pixel off every symmetry axis
    mask = (image[..., :1] > 0).astype(np.uint8)
    transform = build_transforms(spec, train=True)
    seen = set()
    for _ in range(24):
        out = transform(image=image, mask=mask)
        marked = tuple(np.argwhere(out["image"][..., 0] == 255)[0])
        assert tuple(np.argwhere(out["mask"][..., 0] == 1)[0]) == marked
        seen.add(marked)
    # 0-3 quarter turns of (0, 1) on a 32x32 grid (albumentations draws 0 too).
    assert seen == {(0, 1), (30, 0), (31, 30), (1, 31)}
    assert Augment().rotate90 == 0  # off unless a recipe asks: most inputs are not square
