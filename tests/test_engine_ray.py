"""``--engine ray`` (Ray Data on a local Ray with two model workers) gives the same
outputs as the local path on real images: the same masks, submission rows and cut-out
decisions, the same skipped file; and a run killed part-way resumes to the same result."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from seglab.cli import app as cli

pytest.importorskip("ray", reason="--engine ray needs seglab[ray] (make test installs it)")


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}


def _inputs(tmp_path: Path, sources: list[Path]) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for src in sources:
        shutil.copy(src, folder / src.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return folder


def test_cutout_on_ray_matches_the_local_path(shared_data, tmp_path):
    photos = sorted((shared_data / "jewellery-photos").glob("*.webp"))[:3]
    photos += sorted((shared_data / "jewellery-scenes").rglob("*.jpg"))[:3]
    folder = _inputs(tmp_path, photos)
    runner = CliRunner()
    common = [str(folder), "--backend", "torch"]
    local = runner.invoke(cli, ["cutout", *common, "-o", str(tmp_path / "local"),
                                "--workers", "0"])
    ray = runner.invoke(cli, ["cutout", *common, "-o", str(tmp_path / "ray"),
                              "--engine", "ray", "--ray-workers", "2"])
    assert local.exit_code == ray.exit_code == 1, ray.output
    # The same rows; a confidence may differ in its fifth decimal, as the two paths batch
    # the photos differently and a convolution's sums round by batch (seen with v7).
    def rows(run: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / run / "results.jsonl").open()]

    local_rows, ray_rows = rows("local"), rows("ray")
    assert len(local_rows) == len(ray_rows) == 6  # the broken file is an error, not a row
    for mine, theirs in zip(local_rows, ray_rows, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            if key == "confidence":
                assert abs(value - theirs[key]) <= 2e-5, (mine, theirs)
            elif key != "reason" or not value.startswith("confidence"):
                assert value == theirs[key], (key, mine, theirs)
    masks = _digests(tmp_path / "local")
    assert len([m for m in masks if m.startswith("masks/")]) == 6
    assert {k: v for k, v in _digests(tmp_path / "ray").items()
            if not k.startswith("review")} == {k: v for k, v in masks.items()
                                               if not k.startswith("review")}
    assert (tmp_path / "ray" / "review").is_dir() and (tmp_path / "ray" / "gate_report.png"
                                                        ).is_file()


def test_predict_on_ray_killed_part_way_resumes_to_the_local_result(shared_data, tmp_path):
    strips = sorted((shared_data / "neu-seg" / "images").glob("*.jpg"))[:40]
    folder = _inputs(tmp_path, strips)
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "seglab", "predict", "steel-defects", str(folder),
               "--out", str(out), "--backend", "torch", "--engine", "ray", "--ray-workers",
               "2", "--batch-size", "1", "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    log = out / "summary.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.wait()
    done = len(log.read_text().splitlines())
    assert 3 <= done < 40
    again = subprocess.run([*command, "--parquet"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 1, again.stderr[-2000:]  # broken.jpg skipped again
    assert "broken.jpg" in again.stderr
    rows = log.read_text().splitlines()
    assert len(rows) == 40 and len({r for r in rows}) == 40  # nothing twice, nothing lost
    # The local reference computes as each Ray worker does: one thread, one image a batch.
    # Other thread counts or batch sizes add in another order, and on an AVX2-only CPU one
    # pixel of 40 strips sat close enough to 0.5 to flip.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = CliRunner().invoke(cli, ["predict", "steel-defects", str(folder), "--out",
                                         str(tmp_path / "local"), "--backend", "torch",
                                         "--workers", "0", "--batch-size", "1"])
    finally:
        torch.set_num_threads(threads)
    assert local.exit_code == 1
    for name in ("submission.csv", "summary.csv", "summary.jsonl"):
        assert (out / name).read_text() == (tmp_path / "local" / name).read_text()
    assert _digests(out) == _digests(tmp_path / "local")
    import pyarrow.parquet as pq

    table = pq.read_table(out / "summary.parquet")
    assert table.num_rows == 40 and "defect_score" in table.column_names
