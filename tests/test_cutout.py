"""Synthetic composites, the cut-out pipeline, the review sheet and the gate report."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

from seglab.cutout.batch import cutout_files, gate_report
from seglab.cutout.remove import parse_colour, remove
from seglab.data.backgrounds import list_photos
from seglab.data.cutouts import load_foregrounds
from seglab.data.datasets import CutoutDataset
from seglab.data.images import read_image
from seglab.data.synth import Synthesizer, generate
from seglab.errors import SeglabError
from seglab.infer.predictor import Predictor
from seglab.metrics import iou
from seglab.models import folder as modelfolder
from seglab.models.network import build
from seglab.recipes import SynthSpec, load_recipe

SMALL = SynthSpec(size=(64, 64), max_side=128)


@pytest.fixture(scope="module")
def foregrounds(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fg")
    src = sorted((shared_data / "jewellery-cutouts").rglob("*.png"))[:4]
    for i, p in enumerate(src):  # names repeat across source folders: number the copies
        (folder / f"{i}-{p.name}").write_bytes(p.read_bytes())
    Image.new("RGB", (40, 40), (200, 10, 10)).save(folder / "opaque.png")  # no alpha
    return folder


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_synthesis_is_reproducible_byte_for_byte(foregrounds, shared_data, tmp_path):
    fgs, skipped = load_foregrounds(foregrounds, SMALL)
    assert len(fgs) == 4 and len(skipped) == 1 and "opaque.png" in skipped[0]
    rooms = list_photos([shared_data / "backgrounds" / "rooms"])[:5]
    hands = list_photos([shared_data / "backgrounds" / "hands"])[:5]
    one = generate(Synthesizer(SMALL, fgs, rooms, hands, seed=3), tmp_path / "a", 10,
                   workers=1, progress=False)
    two = generate(Synthesizer(SMALL, fgs, rooms, hands, seed=3), tmp_path / "b", 10,
                   workers=2, progress=False)
    assert _digest(one) == _digest(two)
    other = generate(Synthesizer(SMALL, fgs, rooms, hands, seed=4), tmp_path / "c", 10,
                     progress=False)
    assert _digest(one) != _digest(other)
    manifest = [json.loads(x) for x in (one / "manifest.jsonl").read_text().splitlines()]
    assert [m["index"] for m in manifest] == list(range(10))
    kinds = {m["background"] for m in manifest}
    assert kinds <= {"colour", "shapes", "rooms", "hands"} and len(kinds) >= 2
    for m in manifest:
        mask = read_image(one / "masks" / f"{m['index']:06d}.png", mode="L")
        assert set(np.unique(mask)) <= {0, 255}
        assert m["area_fraction"] == pytest.approx((mask > 0).mean(), abs=1e-4)


def _tiny_cutout_model(tmp_path):
    recipe = load_recipe("jewellery-unet-effb3", {"model": {
        "encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [8, 8, 4]},
        "data": {"input_size": [64, 64]}})
    net = build(recipe.model)
    config = modelfolder.ModelConfig.from_recipe(recipe)
    folder = modelfolder.save(tmp_path / "model", net, config)
    from seglab import load_model

    return load_model(folder)


class _Planted(Predictor):
    """A predictor whose probability map is planted, to test the pipeline exactly."""

    def __init__(self, base: Predictor, probs: np.ndarray) -> None:
        super().__init__(base.net, base.config)
        self.planted = probs

    def probabilities(self, images):
        return [(self.planted[None], np.array([self.planted.max()])) for _ in images]


def test_remove_accepts_a_sure_cutout_and_keeps_the_original_otherwise(tmp_path):
    base = _tiny_cutout_model(tmp_path)
    image = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    probs = np.full((100, 100), 0.001, np.float32)
    probs[20:70, 30:80] = 0.999  # 25% of the image
    result = remove(image, _Planted(base, probs))
    # The 3x3 elliptic opening rounds off the square's 4 corner pixels: 2496 remain.
    assert result.decision.accepted and result.decision.area_fraction == 0.2496
    mean_out = (7500 * 0.001 + 4 * 0.999) / 7504
    assert result.decision.confidence == pytest.approx(min(0.999, 1 - mean_out), abs=1e-5)
    rgba = result.shown()
    assert rgba.shape == (100, 100, 4)
    assert (rgba[21:69, 31:79, 3] == 255).all() and rgba[..., 3].sum() == 2496 * 255
    on_white = result.on_colour((255, 255, 255))
    assert (on_white[0, 0] == 255).all() and (on_white[40, 50] == image[40, 50]).all()
    unsure = probs.copy()
    unsure[20:70, 30:80] = 0.9
    rejected = remove(image, _Planted(base, unsure))
    assert not rejected.decision.accepted
    assert rejected.decision.reason == "confidence 0.900 is below 0.98"
    assert rejected.shown() is image


def test_cutout_files_writes_everything_and_skips_bad_files(tmp_path):
    base = _tiny_cutout_model(tmp_path)
    probs = np.full((48, 64), 0.001, np.float32)
    probs[10:30, 10:40] = 0.999
    (tmp_path / "in").mkdir()
    for i in range(3):
        img = Image.fromarray(np.full((48, 64, 3), 40 * i, np.uint8))
        img.save(tmp_path / "in" / f"p{i}.jpg")
    (tmp_path / "in" / "bad.jpg").write_bytes(b"<html>")
    summary = cutout_files(_Planted(base, probs), [tmp_path / "in"], tmp_path / "out",
                           background=parse_colour("#00ff00"), progress=False)
    assert summary["images"] == 3 and summary["accepted"] == 3 and len(summary["errors"]) == 1
    shown = read_image(tmp_path / "out" / "shown" / "p1.png")
    assert tuple(shown[0, 0]) == (0, 255, 0)  # background replaced by the chosen colour
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert rows[0] == "image,accepted,confidence,area_fraction,reason" and len(rows) == 4
    assert (tmp_path / "out" / "review" / "review_001.png").exists()
    html = (tmp_path / "out" / "review" / "index.html").read_text()
    assert html.count("<tr>") == 4 and "class='ok'" in html
    assert (tmp_path / "out" / "gate_report.png").exists()


def test_cutout_files_streams_with_decode_workers_and_resumes(tmp_path):
    base = _tiny_cutout_model(tmp_path)
    probs = np.full((48, 64), 0.001, np.float32)
    probs[10:30, 10:40] = 0.999
    (tmp_path / "in").mkdir()
    for i in range(7):
        Image.fromarray(np.full((48, 64, 3), 30 * i, np.uint8)).save(tmp_path / "in" / f"{i}.png")
    planted = _Planted(base, probs)
    first = cutout_files(planted, [tmp_path / "in"], tmp_path / "out", batch_size=2,
                         workers=2, progress=False)
    log = tmp_path / "out" / "results.jsonl"
    lines = log.read_text().splitlines()
    assert first["images"] == 7 and len(lines) == 7
    # A kill after four images, in the middle of writing the fifth line:
    log.write_text("\n".join(lines[:4]) + "\n" + lines[4][:10])
    (tmp_path / "out" / "shown" / "6.png").unlink()
    calls = []
    original = planted.probabilities
    planted.probabilities = lambda images: calls.append(len(images)) or original(images)
    again = cutout_files(planted, [tmp_path / "in"], tmp_path / "out", batch_size=2,
                         resume=True, progress=False)
    assert sum(calls) == 3  # only the images not recorded as done
    assert again["images"] == 7 and (tmp_path / "out" / "shown" / "6.png").exists()
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert sorted(r["image"] for r in rows) == [f"{i}.png" for i in range(7)]


def test_gate_report_on_labelled_photos(shared_data, tmp_path):
    predictor = _tiny_cutout_model(tmp_path)
    data = CutoutDataset(shared_data / "ecssd").subset(range(6))
    report = gate_report(predictor, data, tmp_path / "gate", name="ecssd", progress=False)
    assert report["images"] == 6 and 0.0 <= report["mean_iou"] <= 1.0
    assert len(report["curve"]) == 51
    coverages = [c["coverage"] for c in report["curve"]]
    assert coverages == sorted(coverages, reverse=True)  # higher threshold, fewer accepted
    assert (tmp_path / "gate" / "precision_coverage.png").exists()
    assert iou(np.ones((2, 2)), np.ones((2, 2))) == 1.0
    assert iou(np.eye(2), np.ones((2, 2))) == 0.5


def test_on_the_fly_synthetic_data_is_fresh_each_epoch_and_reproducible(shared_data, tmp_path):
    from seglab.data.composites import synthetic_split

    root = tmp_path / "data"
    root.mkdir()
    (root / "cutouts").symlink_to(shared_data / "jewellery-cutouts")
    (root / "rooms").symlink_to(shared_data / "backgrounds" / "rooms")
    recipe = load_recipe("jewellery-unet-effb3", {"data": {
        "format": "synthetic", "input_size": [64, 64], "val_fraction": 0.25,
        "synth": {"size": [96, 96], "foregrounds": "cutouts", "hands": "missing",
                  "samples_per_epoch": 6, "val_samples": 3, "exclude": []}}})
    train_set, val_set = synthetic_split(recipe.data, root)
    assert (len(train_set), len(val_set)) == (6, 3)
    train_names = {f.name for f in train_set.synth.foregrounds}
    val_names = {f.name for f in val_set.synth.foregrounds}
    # Cut-outs are told apart by relative path: several folders hold a `1.png`.
    usable = len(train_set.synth.foregrounds) + len(val_set.synth.foregrounds)
    assert len(train_names | val_names) == usable and usable > 200
    assert not train_names & val_names and len(val_names) == round(usable / 4)  # held back
    assert sum(n.endswith("/1.png") for n in train_names | val_names) > 1
    assert not train_set.synth.photos["hands"] and train_set.synth.photos["rooms"]
    first = train_set.load(0)[0]
    assert (train_set.load(0)[0] == first).all()  # same epoch, same composite
    train_set.set_epoch(1)
    assert not (train_set.load(0)[0] == first).all()  # a new epoch draws new composites
    val0 = val_set.load(0)[0]
    val_set.set_epoch(5)
    assert (val_set.load(0)[0] == val0).all()  # validation never changes
    again, _ = synthetic_split(recipe.data, root)
    again.set_epoch(1)
    assert (again.load(0)[0] == train_set.load(0)[0]).all()  # reproducible across runs
    sample = train_set[0]
    assert sample["image"].shape == (3, 64, 64) and set(sample["mask"].unique().tolist()) <= {0, 1}
    # A later stage with its own stream seed draws other composites from the same split,
    # and validates on the same composites as the earlier stages.
    later = recipe.data.model_copy(update={"synth": recipe.data.synth.model_copy(
        update={"stream_seed": recipe.data.seed + 100})})
    later_train, later_val = synthetic_split(later, root)
    assert {f.name for f in later_train.synth.foregrounds} == train_names
    assert not (later_train.load(0)[0] == first).all()
    assert (later_val.load(0)[0] == val0).all()
    # Excluded cut-outs leave after the split: everything else stays on its side.
    gone = {sorted(train_names)[0], sorted(val_names)[0]}
    fewer = recipe.data.model_copy(update={"synth": recipe.data.synth.model_copy(
        update={"exclude": sorted(gone)})})
    fewer_train, fewer_val = synthetic_split(fewer, root)
    assert {f.name for f in fewer_train.synth.foregrounds} == train_names - gone
    assert {f.name for f in fewer_val.synth.foregrounds} == val_names - gone
    everything = recipe.data.model_copy(update={"synth": recipe.data.synth.model_copy(
        update={"exclude": sorted(val_names)})})
    with pytest.raises(SeglabError, match="leaves no cut-out for validation"):
        synthetic_split(everything, root)


def test_the_excluded_cut_outs_are_keyed_on_white_with_highlights_punched_out(shared_data):
    """What the jewellery recipes exclude is checked on the data, not taken on trust.

    The first four: a binary alpha, pure white under every transparent pixel (keyed on
    white), and enclosed holes of 4% or more of the silhouette, where a pearl, a stone
    or polished metal shone. The other four were keyed on white with a soft alpha: a
    white backdrop, halo or floor reflection kept opaque along the outline (over 40% of
    it; 48-73% measured), and pinholes punched through the diamonds (0.51-14 per 1000
    pixels: the thresholds are loose checks, not a detector). Of the kept cut-outs one
    also passes them, looked at and found right: a fine chain."""
    from scipy import ndimage

    from seglab.recipes import shipped

    jewellery = [load_recipe(name) for name in shipped()]
    jewellery = [r for r in jewellery if r.data.synth is not None and (
        r.data.synth.exclude or r.data.synth.foregrounds == "jewellery-cutouts")]
    excluded = load_recipe("jewellery-cutout-cpu-512").data.synth.exclude
    assert len(excluded) == 8 and len(jewellery) >= 10
    assert all(r.data.synth.exclude == excluded for r in jewellery)  # `seglab synth`'s too
    assert "jewellery-unet-effb3" in {r.name for r in jewellery}
    # Each is one the recipes would load: leaving it out is not a no-op.
    loaded, _ = load_foregrounds(shared_data / "jewellery-cutouts", jewellery[0].data.synth)
    assert set(excluded) <= {fg.name for fg in loaded}
    binary = {n for n in excluded if n.startswith("virtualrevolution02-commits__")}
    assert len(binary) == 4
    for name in excluded:
        rgba = read_image(shared_data / "jewellery-cutouts" / name, mode="RGBA")
        alpha = rgba[..., 3]
        solid = alpha >= 128
        filled = ndimage.binary_fill_holes(solid)
        if name in binary:
            assert set(np.unique(alpha).tolist()) == {0, 255}, name
            assert (rgba[..., :3][alpha == 0] == 255).all(), name
            assert (filled & ~solid).sum() >= 0.04 * filled.sum(), name
            continue
        soft = ((alpha > 0) & (alpha < 255)).sum() / (alpha > 0).sum()
        outline = solid & ~ndimage.binary_erosion(solid)
        white_outline = (outline & (rgba[..., :3].min(-1) > 225)).sum() / outline.sum()
        holes, _ = ndimage.label(filled & ~solid)
        sizes = np.bincount(holes.ravel())[1:]
        pinholes = (sizes <= 0.0005 * filled.sum() + 4).sum() / (filled.sum() / 1000)
        assert soft > 0.2 and white_outline > 0.4 and pinholes > 0.5, (
            name, soft, white_outline, pinholes)


def test_loader_workers_draw_the_current_epochs_composites(shared_data, tmp_path):
    # In a fresh interpreter: DataLoader workers are forked, and a fork of this test
    # process (which may run OpenVINO's threads after the export tests) is not safe.
    import subprocess
    import sys

    script = f"""
from pathlib import Path
from seglab.data.composites import synthetic_split
from seglab.recipes import load_recipe
from seglab.training.trainer import make_loaders

root = Path({str(tmp_path)!r}) / "data"
root.mkdir()
(root / "cutouts").symlink_to(Path({str(shared_data)!r}) / "jewellery-cutouts"
                              / "ameyashrikant__Capstone-Project--AR-JewelFit-")
no_aug = {{"hflip": 0, "vflip": 0, "brightness_contrast": 0, "shift_scale": 0}}
recipe = load_recipe("jewellery-unet-effb3", {{
    "train": {{"num_workers": 1, "batch_size": 2}},
    "data": {{"format": "synthetic", "input_size": [32, 32], "val_fraction": 0.5,
             "augment": no_aug,
             "synth": {{"size": [32, 32], "foregrounds": "cutouts", "rooms": "none",
                       "hands": "none", "samples_per_epoch": 2, "val_samples": 2}}}}}})
train_set, val_set = synthetic_split(recipe.data, root)
loader, _ = make_loaders(recipe, train_set, val_set, None)
assert not loader.persistent_workers
seen = []
for epoch in (0, 1):
    loader.sampler.set_epoch(epoch)
    train_set.set_epoch(epoch)
    seen.append(next(iter(loader))["image"])
    direct = train_set[int(next(iter(loader.sampler)))]["image"]
    assert any(bool((direct == img).all()) for img in seen[-1])  # worker == main process
assert not (seen[0] == seen[1]).all()
print("fresh composites in workers")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0 and "fresh composites in workers" in run.stdout, run.stderr


def _sure_and_unsure(tmp_path):
    """A planted model that is sure of a 25% square, and one that is not (p = 0.9)."""
    base = _tiny_cutout_model(tmp_path)
    probs = np.full((100, 100), 0.001, np.float32)
    probs[20:70, 30:80] = 0.999
    unsure = probs.copy()
    unsure[20:70, 30:80] = 0.9
    return _Planted(base, probs), _Planted(base, unsure)


def test_remove_gives_back_the_kind_it_was_given_with_the_decision(tmp_path):
    sure, unsure = _sure_and_unsure(tmp_path)
    image = np.random.default_rng(1).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    png = remove(buf.getvalue(), sure)  # bytes in: PNG bytes of what a person is shown
    assert isinstance(png, bytes) and png[:8] == b"\x89PNG\r\n\x1a\n"
    shown = Image.open(io.BytesIO(png))
    decision = json.loads(shown.info["seglab"])
    assert shown.mode == "RGBA" and decision["accepted"] and decision["area_fraction"] == 0.2496
    assert np.asarray(shown)[..., 3].sum() == 2496 * 255
    kept = Image.open(io.BytesIO(remove(buf.getvalue(), unsure)))
    assert kept.mode == "RGB" and (np.asarray(kept) == image).all()  # the original, unchanged
    assert json.loads(kept.info["seglab"])["reason"] == "confidence 0.900 is below 0.98"
    pil = remove(Image.fromarray(image).convert("RGBA"), sure, bgcolor=(0, 0, 255))
    assert isinstance(pil, Image.Image) and pil.mode == "RGB"  # on the colour asked for
    assert pil.getpixel((0, 0)) == (0, 0, 255) and json.loads(pil.info["seglab"])["accepted"]
    mask = remove(Image.fromarray(image), unsure, only_mask=True)  # the mask, gate or not
    assert mask.mode == "L" and (np.asarray(mask) > 0).sum() == 2496
    assert remove(image, sure).decision.accepted  # arrays and paths: the whole Cutout
    with pytest.raises(TypeError, match="not list"):
        remove([1, 2], sure)


def test_cutouts_folder_holds_only_what_the_gate_accepted(tmp_path):
    sure, unsure = _sure_and_unsure(tmp_path)
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(tmp_path / "in" / "a.png")
    cutout_files(sure, [tmp_path / "in"], tmp_path / "yes", progress=False)
    cutout_files(unsure, [tmp_path / "in"], tmp_path / "no", progress=False)
    assert (tmp_path / "yes" / "cutouts" / "a.png").exists()
    assert not (tmp_path / "no" / "cutouts").exists()  # refused: only shown/ (the original)
    assert (read_image(tmp_path / "no" / "shown" / "a.png") == 90).all()
    cutout_files(unsure, [tmp_path / "in"], tmp_path / "m", mask_only=True, progress=False)
    written = sorted(p.relative_to(tmp_path / "m").as_posix()
                     for p in (tmp_path / "m").rglob("*") if p.is_file())
    assert written == ["masks/a.png", "results.csv", "results.json", "results.jsonl"]


def test_watch_cuts_out_photos_as_they_land_and_a_restart_goes_on(tmp_path):
    from seglab.cutout.batch import watch

    sure, _ = _sure_and_unsure(tmp_path)
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    (inbox / "shop").mkdir(parents=True)
    photo = Image.fromarray(np.full((100, 100, 3), 120, np.uint8))
    photo.save(inbox / "1.jpg")
    lines: list[str] = []
    stop = threading.Event()
    worker = threading.Thread(target=watch, args=(sure, inbox, out), kwargs={
        "interval": 0.05, "stop": stop.is_set, "report": lines.append})
    worker.start()
    try:
        for _ in range(200):
            if (out / "shown" / "1.png").exists():
                break
            time.sleep(0.05)
        photo.save(inbox / "shop" / "1.jpg")  # lands later, same file name in a sub-folder
        (inbox / "shop" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
        for _ in range(200):
            if (out / "shown" / "shop__1.png").exists():
                break
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(10)
    assert (out / "shown" / "1.png").exists() and (out / "shown" / "shop__1.png").exists()
    assert any("broken.jpg" in line or "done" in line for line in lines)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["output"] for r in rows) == ["1", "shop__1"]
    photo.save(inbox / "2.png")  # a restarted watch skips what is done, takes what is new
    summary = watch(sure, inbox, out, interval=0.01, stop=lambda: (out / "shown" / "2.png")
                    .exists(), report=lines.append)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["output"] for r in rows) == ["1", "2", "shop__1"]
    assert summary is not None and summary.images == 3 and summary.accepted == 3
