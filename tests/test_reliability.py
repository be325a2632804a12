"""Killed for real: `kill -9` in the middle of training and of batch prediction, then resume.

Each job runs as its own `seglab` process, as a user would start it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from seglab.demo import make_dataset
from seglab.models.folder import read_config
from seglab.recipes import load_recipe

SEGLAB = [sys.executable, "-m", "seglab.cli"]
TINY = {
    "model": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]},
    "data": {"input_size": None, "crop_size": None, "val_fraction": 0.25},
    "train": {"epochs": 5, "batch_size": 4, "lr": 0.003, "precision": "32"},
}


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before the kill (exit {proc.returncode}): "
                                 f"{proc.stdout.read() if proc.stdout else ''}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the process")
        time.sleep(0.05)


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run([*SEGLAB, *args], capture_output=True, text=True, timeout=600, **kw)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _epoch_of(ckpt: Path) -> int:
    import torch

    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    data = make_dataset(root / "strips", 8, seed=5, shape=(64, 400))
    recipe = load_recipe("cpu-demo", TINY)
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    return root, data, path


COMMON = ["--no-tune", "--no-factors"]


@pytest.fixture(scope="module")
def straight(setup):
    """The uninterrupted seeded run (its model also serves the prediction kill test)."""
    root, data, recipe = setup
    _run(["train", str(recipe), "--out", str(root / "straight"), "--data", str(data), *COMMON])
    return root / "straight" / "model"


def test_train_killed_with_sigkill_resumes_to_the_same_result(setup, straight):
    root, data, recipe = setup
    common = ["--data", str(data), *COMMON]
    reference = read_config(straight).training

    out = root / "killed"
    proc = subprocess.Popen([*SEGLAB, "train", str(recipe), "--out", str(out), *common],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = out / "checkpoints" / "last.ckpt"
    _wait_for(lambda: last.exists() and _safe_epoch(last) >= 1, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model").exists()  # no half-written model folder
    epoch_at_kill = _epoch_of(last)  # the checkpoint is whole and loadable
    assert 1 <= epoch_at_kill < TINY["train"]["epochs"]

    _run(["train", str(recipe), "--out", str(out), "--resume", *common])
    resumed = read_config(out / "model").training
    assert resumed["resumed"] is True
    assert resumed["steps"] == reference["steps"]
    assert resumed["epochs_run"] == reference["epochs_run"]
    # The order and augmentations depend only on (seed, epoch): the interrupted run
    # lands where the straight one did.
    assert resumed["best_checkpoint_score"] == pytest.approx(
        reference["best_checkpoint_score"], abs=0.02)


def _safe_epoch(path: Path) -> int:
    try:
        return _epoch_of(path)
    except Exception:  # still being renamed into place
        return -1


def test_predict_killed_with_sigkill_resumes_without_redoing_or_losing(setup, straight,
                                                                       tmp_path):
    _, data, _ = setup
    model = straight
    images = sorted((data / "train_images").glob("*.jpg"))
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(60):  # enough images that the kill lands mid-run
        (folder / f"s{i:03d}.jpg").write_bytes(images[i % len(images)].read_bytes())
    out = tmp_path / "out"
    proc = subprocess.Popen([*SEGLAB, "predict", str(model), str(folder), "--out", str(out),
                             "--batch-size", "2", "--workers", "0", "--backend", "torch"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = out / "summary.jsonl"
    _wait_for(lambda: log.exists() and log.read_text().count("\n") >= 6, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = log.read_text().count("\n")
    assert done_before < 60 and not (out / "submission.csv").exists()

    _run(["predict", str(model), str(folder), "--out", str(out), "--resume", "--backend",
          "torch"])
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    names = [r["image"] for r in rows]
    assert sorted(names) == [f"s{i:03d}.jpg" for i in range(60)]  # each exactly once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 60
    from seglab.data import rle

    labels = rle.read_csv(out / "submission.csv", shape=(64, 400))
    for r in rows:
        for c, code in r["rle"].items():
            assert labels.rles[r["image"]][int(c)] == code
    overlays = sorted(p.name for p in (out / "overlays").glob("*.png"))
    assert len(overlays) == 60 and np.all([p.endswith(".png") for p in overlays])
