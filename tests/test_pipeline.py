"""End to end on generated strips: train, tune, evaluate, card, predict (tiny and fast)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from seglab.cli import app
from seglab.data import rle
from seglab.data.images import read_image
from seglab.demo import make_dataset
from seglab.recipes import load_recipe

TINY = {
    "model": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]},
    "data": {"input_size": None, "crop_size": None, "val_fraction": 0.25},
    "train": {"epochs": 2, "batch_size": 4, "lr": 0.003},
}


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    import seglab

    root = tmp_path_factory.mktemp("pipeline")
    data = make_dataset(root / "strips", 16, seed=7, shape=(64, 400))
    result = seglab.fit(load_recipe("cpu-demo", TINY), data, root / "run", factors=True,
                        progress=False, dataset_name="val")
    return root, data, result.model_dir, result.metrics


def test_training_writes_run_and_model_folder(trained):
    root, _, model, _ = trained
    run = root / "run"
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "logs" / "metrics.csv").read_text().count("val_mean_dice") >= 1
    assert any((run / "tensorboard").iterdir())
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) + len(split["val"]) == 16
    for name in ("config.json", "model.safetensors", "README.md", "metrics.json",
                 "dice_per_class.png", "pr_curves.png", "worst_images.png", "factors.png"):
        assert (model / name).stat().st_size > 0, name


def test_tuned_thresholds_are_stored_and_used(trained):
    _, _, model, metrics = trained
    import seglab

    config = json.loads((model / "config.json").read_text())
    post = config["postprocess"]
    assert len(post["threshold"]) == 4 and len(post["min_area"]) == 4
    for name, tuned in metrics["tuning"].items():
        i = config["model"]["classes"].index(name)
        assert post["threshold"][i] == pytest.approx(tuned["threshold"])
        assert post["min_area"][i] == tuned["min_area"]
        assert tuned["mean_dice"] >= tuned["mean_dice_untuned"] - 1e-9
    predictor = seglab.load_model(model)
    assert predictor.config.postprocess.min_area == post["min_area"]


def test_model_card_numbers_come_from_metrics(trained):
    _, _, model, _ = trained
    card = (model / "README.md").read_text()
    metrics = json.loads((model / "metrics.json").read_text())
    front = card.split("---")[1]
    assert "library_name: seglab" in front and "pipeline_tag: image-segmentation" in front
    assert f"value: {round(metrics['mean_dice'], 5)}" in front
    assert f"| {metrics['mean_dice']:.4f} |" in card
    assert f"| {metrics['all_empty_mean_dice']:.4f} |" in card
    for name, pc in metrics["per_class"].items():
        assert f"| {name} | {pc['dice']:.4f} |" in card
    params = int(re.search(r"Parameters: ([\d,]+)", card).group(1).replace(",", ""))
    import seglab
    from seglab.models.network import count_parameters

    assert params == count_parameters(seglab.load_model(model).net)
    for section in ("## Model details", "## Intended uses", "## Out-of-scope uses",
                    "## How to get started", "## Training data", "## Preprocessing",
                    "## Hyper-parameters", "## Evaluation data", "## Metrics", "## Factors",
                    "## Hardware and software"):
        assert section in card
    factors = {r["factor"] for r in metrics["factors"]}
    assert factors == {"lighting", "camera angle", "distance", "camera type"}
    for row in metrics["factors"]:
        assert f"| {row['factor']} | {row['change']} | {row['mean_dice']:.4f} |" in card


def test_card_snippet_runs_as_written(trained, monkeypatch):
    _, data, model, _ = trained
    card = (model / "README.md").read_text()
    snippet = card.split("```python")[1].split("```")[0]
    image = next((data / "train_images").iterdir())
    monkeypatch.chdir(model.parent)
    (model.parent / "image.jpg").write_bytes(image.read_bytes())
    exec(compile(snippet, "card", "exec"), {})


def test_predict_cli_writes_consistent_outputs(trained, tmp_path):
    _, data, model, _ = trained
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"not an image")
    images = sorted((data / "train_images").iterdir())[:5]
    result = CliRunner().invoke(app, ["predict", str(model), *map(str, images), str(bad),
                                      "--out", str(tmp_path / "out"), "--layout", "combined"])
    assert result.exit_code == 1, result.output  # one input skipped (and named)
    assert "broken.jpg" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == 5 and len(summary["errors"]) == 1
    assert "broken.jpg" in summary["errors"][0]["error"]
    labels = rle.read_csv(tmp_path / "out" / "submission.csv", shape=(64, 400))
    assert labels.images == [p.name for p in images]
    names = ["defect_1", "defect_2", "defect_3", "defect_4"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "summary.jsonl").open()]
    assert [r["image"] for r in rows] == [p.name for p in images]
    for row in rows:
        for c, name in enumerate(names):
            png = tmp_path / "out" / "masks" / f"{row['image'][:-4]}_{name}.png"
            area = row["area"][name]
            assert png.exists() == (area > 0)
            if area:
                mask = read_image(png, mode="L") > 0
                decoded = rle.decode(labels.rles[row["image"]][c + 1], (64, 400))
                assert np.array_equal(mask, decoded.astype(bool)) and mask.sum() == area
        assert (tmp_path / "out" / "overlays" / f"{row['image'][:-4]}.png").exists()


def test_cli_user_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(tmp_path / "nomodel"), "x.jpg", "--out",
                                 str(tmp_path)])
    assert result.exit_code == 2
    assert "error: model folder not found" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["train", "no-such-recipe", "--data", ".", "--out", "x"])
    assert result.exit_code == 2 and "recipe 'no-such-recipe' not found" in result.output
    result = runner.invoke(app, ["export"])  # a model is required (serve defaults to the zoo)
    assert result.exit_code == 2 and "Missing argument" in result.output


def test_help_lists_every_verb():
    result = CliRunner().invoke(app, ["--help"])
    for verb in ("train", "evaluate", "predict", "synth", "cutout", "export", "serve", "demo",
                 "soup"):
        assert verb in result.output


@pytest.mark.parametrize("layout", ["split", "combined"])
def test_predict_real_severstal_strips_round_trip(trained, shared_data, tmp_path, layout):
    """All 20 real strips get CSV rows whose RLE decodes back to the written masks."""
    import seglab
    from seglab.defects.batch import predict_files

    _, _, model, _ = trained
    folder = shared_data / "severstal-labelled"
    predictor = seglab.load_model(model)
    # Thresholds at each class's 80th probability percentile on one strip: the masks are
    # large and ragged, a hard case for RLE, whatever this tiny model has learned.
    probs, _ = predictor.probabilities([read_image(folder / "002fc4e19.jpg")])[0]
    cut = [float(np.quantile(p, 0.8)) for p in probs]
    predictor.config.postprocess = predictor.config.postprocess.model_copy(
        update={"threshold": cut, "min_area": 0, "classifier_threshold": 0.0})
    summary = predict_files(predictor, [folder], tmp_path, layout=layout, progress=False)
    assert summary["images"] == 20 and summary["errors"] == []
    labels = rle.read_csv(tmp_path / "submission.csv")
    assert sorted(labels.images) == sorted(p.name for p in folder.glob("*.jpg"))
    header = (tmp_path / "submission.csv").read_text().splitlines()[0]
    assert header == ("ImageId,ClassId,EncodedPixels" if layout == "split"
                      else "ImageId_ClassId,EncodedPixels")
    found = 0
    for line in (tmp_path / "summary.jsonl").open():
        row = json.loads(line)
        for c, name in enumerate(predictor.class_names):
            png = tmp_path / "masks" / f"{row['image'][:-4]}_{name}.png"
            if row["area"][name]:
                found += 1
                decoded = rle.decode(labels.rles[row["image"]][c + 1])
                assert np.array_equal(decoded.astype(bool), read_image(png, mode="L") > 0)
            else:
                assert c + 1 not in labels.rles.get(row["image"], {})
    assert found >= 10


def test_ddp_two_cpu_processes_train_the_same_model(tmp_path):
    """`seglab train --devices 2 --strategy ddp` on CPU (gloo): both ranks hold one model."""
    import subprocess
    import sys
    from pathlib import Path

    data = make_dataset(tmp_path / "strips", 12, seed=3, shape=(64, 400))
    seglab_bin = Path(sys.executable).with_name("seglab")
    cmd = [str(seglab_bin), "train", "cpu-demo", "--data", str(data), "--out",
           str(tmp_path / "run"), "--devices", "2", "--accelerator", "cpu", "--strategy", "ddp",
           "--no-tune", "--no-factors",
           "--set", "model.encoder_depth=3", "--set", "model.decoder_channels=[16, 8, 4]",
           "--set", "data.input_size=null", "--set", "data.crop_size=null",
           "--set", "train.epochs=1", "--set", "train.val_every_n_epochs=2",
           "--set", "train.batch_size=2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr  # Lightning's per-run noise is silenced (issue 16.9)
    assert "GPU available" not in said and "💡" not in said and "Tip:" not in said
    assert "LeafSpec" not in said and "Traceback" not in said
    ranks = [json.loads((tmp_path / "run" / "ranks" / f"rank{r}.json").read_text())
             for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["sum"] == ranks[1]["sum"]
    assert ranks[0]["sum_of_squares"] == ranks[1]["sum_of_squares"]
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    # No validation during the one epoch: both ranks validated the final weights after it.
    training = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["training"]
    assert training["best_checkpoint"] == "final.ckpt"


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    from seglab.models.folder import read_config
    from seglab.training.trainer import train

    data = make_dataset(tmp_path / "strips", 8, seed=5, shape=(64, 400))
    one = load_recipe("cpu-demo", {**TINY, "train": {**TINY["train"], "epochs": 1}})
    train(one, data, tmp_path / "run", progress=False)
    first = read_config(tmp_path / "run" / "model").training
    two = load_recipe("cpu-demo", {**TINY, "train": {**TINY["train"], "epochs": 2}})
    train(two, data, tmp_path / "run", resume=True, progress=False)
    second = read_config(tmp_path / "run" / "model").training
    assert second["resumed"] is True
    assert second["steps"] == 2 * first["steps"] and second["epochs_run"] == 2


def test_bf16_recipe_trains_in_fp32_on_a_cpu_without_bf16(tmp_path, monkeypatch, capsys):
    """The zoo's bf16 recipes were written on CPUs with AVX512_BF16 or AMX; elsewhere
    PyTorch emulates bf16 (a forward pass 107x as long as fp32 on an AVX2-only AMD
    EPYC), so training runs in fp32 there, says so, and the card records what it ran in."""
    from seglab.models.folder import read_config
    from seglab.training import trainer

    monkeypatch.setattr(trainer, "native_bf16", lambda: False)
    data = make_dataset(tmp_path / "strips", 8, seed=5, shape=(64, 400))
    recipe = load_recipe("cpu-demo", {**TINY, "train": {**TINY["train"], "epochs": 1,
                                                       "precision": "bf16-mixed"}})
    trainer.train(recipe, data, tmp_path / "run", progress=False, accelerator="cpu")
    assert read_config(tmp_path / "run" / "model").training["precision"] == "32"
    assert "precision bf16-mixed asked, training in fp32" in capsys.readouterr().err
    monkeypatch.setattr(trainer, "native_bf16", lambda: True)
    assert trainer.train_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert trainer.train_precision("32", "cpu") == "32"


def test_lovasz_per_image_is_the_mean_of_each_images_loss():
    import torch

    from seglab.training.segmenter import Segmenter

    def segmenter(per_image: bool) -> Segmenter:
        return Segmenter(load_recipe("cpu-demo-cutout", {"train": {"loss": {
            "bce": 0.0, "dice": 0.0, "lovasz": 1.0, "lovasz_per_image": per_image}}}))

    # Image 0 is predicted right with a wide margin; image 1 has a small object missed.
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, 0, :4] = 1
    mask[1, 0, 0, 0] = 1
    logits = torch.where(mask.bool(), 5.0, -5.0)
    logits[1, 0, 0, 0] = -5.0
    batch, cls = {"mask": mask}, torch.zeros(2, 0)
    per_image = float(segmenter(True).loss(logits, cls, batch)[0])
    pooled = float(segmenter(False).loss(logits, cls, batch)[0])
    alone = [float(segmenter(True).loss(logits[i:i + 1], cls[i:i + 1], {"mask": mask[i:i + 1]})[0])
             for i in range(2)]
    assert alone[0] == 0.0 and alone[1] > 1.0  # the missed object's whole IoU is lost
    assert per_image == pytest.approx(sum(alone) / 2)
    # Pooled over the batch, the big right object hides the small one's miss.
    assert pooled < per_image / 2


def test_dice_per_image_is_the_mean_of_each_images_soft_dice():
    import torch

    from seglab.training.segmenter import Segmenter

    def loss(per_image: bool, logits: torch.Tensor, mask: torch.Tensor) -> float:
        segmenter = Segmenter(load_recipe("cpu-demo-cutout", {"train": {"loss": {
            "bce": 0.0, "dice": 1.0, "dice_per_image": per_image}}}))
        return float(segmenter.loss(logits, torch.zeros(len(mask), 0), {"mask": mask})[0])

    # A large pendant predicted right beside a 4-pixel chain missed entirely.
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, 0, :20, :20] = 1
    mask[1, 0, 0, :4] = 1
    logits = torch.where(mask.bool(), 8.0, -8.0)
    logits[1, 0, 0, :4] = -8.0
    alone = [loss(True, logits[i:i + 1], mask[i:i + 1]) for i in range(2)]
    assert alone[0] < 0.01 and alone[1] > 0.99  # the chain's whole Dice is lost
    assert loss(True, logits, mask) == pytest.approx(sum(alone) / 2, abs=1e-4)
    # Pooled, the pendant's 400 pixels hide the chain's 4: the loss hardly moves.
    assert loss(False, logits, mask) < 0.02
    # An image without foreground counts 0 in the mean (smp's rule): beside the missed
    # chain it halves the loss, even when it has false alarms (those are left to BCE).
    empty = torch.cat([mask[1:], torch.zeros(1, 1, 32, 32)])
    quiet = torch.cat([logits[1:], torch.full((1, 1, 32, 32), -8.0)])
    assert loss(True, quiet, empty) == pytest.approx(alone[1] / 2, abs=1e-3)
    alarms = quiet.clone()
    alarms[1, 0, 10:20, 10:20] = 8.0
    assert loss(True, alarms, empty) == pytest.approx(alone[1] / 2, abs=1e-3)


def test_edge_weight_counts_the_pixels_around_true_outlines_more():
    import torch
    import torch.nn.functional as F

    from seglab.training.segmenter import Segmenter, edge_band

    # A 4x4 square in 12x12: width 1 marks its outer ring of 4x4 - 2x2 = 12 pixels and
    # the 6x6 - 4x4 = 20 pixels just outside it; nothing at the far corners.
    mask = torch.zeros(1, 1, 12, 12)
    mask[..., 4:8, 4:8] = 1
    band = edge_band(mask, 1)
    assert int(band.sum()) == 32 and band[..., 0, 0] == 0 and band[..., 5:7, 5:7].sum() == 0
    assert int(edge_band(mask, 2).sum()) == 64  # all of the 8x8 around it: none left inside
    # An image border is not an outline: a mask filling the top half has one band row pair.
    half = torch.zeros(1, 1, 8, 8)
    half[..., :4, :] = 1
    assert edge_band(half, 1)[0, 0].sum(dim=1).tolist() == [0, 0, 0, 8, 8, 0, 0, 0]

    def bce(edge_weight: float, logits: torch.Tensor) -> float:
        segmenter = Segmenter(load_recipe("cpu-demo-cutout", {"train": {"loss": {
            "bce": 1.0, "dice": 0.0, "edge_weight": edge_weight, "edge_width": 1}}}))
        return float(segmenter.loss(logits, torch.zeros(1, 0), {"mask": mask})[0])

    # One wrong pixel on the outline, one far from it: with weight 4 the outline's error
    # counts five times, the far one once; weight 0 is plain BCE.
    logits = torch.where(mask.bool(), 6.0, -6.0)
    on_edge, far = logits.clone(), logits.clone()
    on_edge[..., 3, 3] = 6.0  # just outside the square's corner
    far[..., 0, 0] = 6.0
    assert bce(0.0, on_edge) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(on_edge, mask)))
    assert bce(0.0, on_edge) == pytest.approx(bce(0.0, far))
    base = bce(4.0, logits)
    assert bce(4.0, on_edge) - base == pytest.approx(5 * (bce(4.0, far) - base), rel=1e-3)


def test_the_weights_training_ends_with_are_validated_and_kept_when_best(tmp_path):
    import csv

    import torch

    from seglab.models.folder import read_config
    from seglab.training.trainer import train

    data = make_dataset(tmp_path / "strips", 8, seed=5, shape=(64, 400))

    def recipe(epochs: int):
        return load_recipe("cpu-demo", {**TINY, "train": {
            **TINY["train"], "epochs": epochs, "val_every_n_epochs": 2}})

    # One epoch with validation every second one: no validation during fit, so the last
    # weights are validated at the end and kept; the latest state was still saved.
    train(recipe(1), data, tmp_path / "run", progress=False)
    checkpoints = tmp_path / "run" / "checkpoints"
    first = read_config(tmp_path / "run" / "model").training
    assert first["best_checkpoint"] == "final.ckpt" and first["best_checkpoint_score"] is not None
    latest = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert latest["global_step"] == first["steps"] and latest["seglab_validated_step"] == first[
        "steps"]  # the kept final weights and their validation travel with --resume
    # Resumed to three epochs: validated after the second by Lightning, after the third by
    # seglab; the model is the better of the two, with its score.
    train(recipe(3), data, tmp_path / "run", resume=True, progress=False)
    third = read_config(tmp_path / "run" / "model").training
    monitor = third["best_checkpoint_metric"]
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:  # the resumed run's log
        scores = [float(r[monitor]) for r in csv.DictReader(f) if r.get(monitor)]
    assert len(scores) == 2  # after epochs 2 and 3
    assert third["steps"] == 3 * first["steps"]
    # The first run's final weights compete too: their score travelled in last.ckpt.
    first_score = float(next(v["best_model_score"] for k, v in latest["callbacks"].items()
                             if k.startswith("ModelCheckpoint") and v.get("best_model_score")
                             is not None))
    assert first_score == pytest.approx(first["best_checkpoint_score"], abs=1e-5)
    candidates = [(first_score, "final.ckpt"), (scores[0], "best.ckpt"), (scores[1], "final.ckpt")]
    score, name = max(candidates, key=lambda c: c[0])  # the earliest of equals, as Lightning
    assert third["best_checkpoint_score"] == pytest.approx(score, abs=1e-5)
    assert third["best_checkpoint"] == name
    assert (checkpoints / "final.ckpt").exists() == (name == "final.ckpt")
    # One file per role: a beaten best.ckpt went, so Lightning never writes best-v1.ckpt.
    assert {p.name for p in checkpoints.iterdir()} <= {"best.ckpt", "final.ckpt", "last.ckpt"}
