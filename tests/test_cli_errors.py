"""A user mistake at the command line is one `error:` line and exit status 2, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from seglab.cli import app
from seglab.models import folder as modelfolder
from seglab.models.network import build
from seglab.recipes import load_recipe


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    recipe = load_recipe("cpu-demo", {"model": {"encoder_depth": 3,
                                                "decoder_channels": [8, 8, 4]}})
    return modelfolder.save(tmp_path_factory.mktemp("m") / "model", build(recipe.model),
                            modelfolder.ModelConfig.from_recipe(recipe))


def _mistakes(tmp_path, model):
    bad_recipe = tmp_path / "bad.yaml"
    bad_recipe.write_text("name: x\ntask: defects\nmodel: {arch: Unet, encoder: resnet18, "
                          "classes: [a]}\ndata: {format: severstal}\ntrain: {lr: 5}\nwat: 1\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    data = tmp_path / "steel"
    (data / "train_images").mkdir(parents=True)
    (data / "train.csv").write_text("ImageId,ClassId,EncodedPixels\na.jpg,7,1 3\n")
    img = tmp_path / "photo.jpg"
    img.write_bytes(b"<html>not a photo</html>")
    return {
        "unknown recipe keys and out-of-range lr": (["train", str(bad_recipe), "--data",
                                                     str(data), "--out", str(tmp_path / "r")],
                                                    ["wat", "lr"]),
        "unknown shipped recipe": (["train", "nope", "--data", str(data), "--out",
                                    str(tmp_path / "r")], ["nope"]),
        "missing model folder": (["predict", str(tmp_path / "none"), str(img), "--out",
                                  str(tmp_path / "o")], ["none"]),
        "corrupted weights": (["predict", str(broken), str(img), "--out", str(tmp_path / "o")],
                              ["model.safetensors"]),
        "unknown class id in CSV": (["evaluate", str(model), "--data", str(data)], ["7"]),
        "bad layout": (["predict", str(model), str(img), "--out", str(tmp_path / "o"),
                        "--layout", "wide"], ["layout"]),
        "bad colour": (["cutout", str(model), str(img), "--out", str(tmp_path / "o"),
                        "--bg-color", "pink"], ["pink"]),
        "unknown backend": (["predict", str(model), str(img), "--out", str(tmp_path / "o"),
                             "--backend", "tensorrt"], ["tensorrt"]),
        "unknown export format": (["export", str(model), "--format", "coreml"], ["coreml"]),
        "missing input path": (["predict", str(model), str(tmp_path / "nowhere"), "--out",
                                str(tmp_path / "o")], ["no such file or folder", "nowhere"]),
        "glob matching nothing": (["cutout", str(tmp_path / "*.webp"), "--out",
                                   str(tmp_path / "o")], ["no files match", "*.webp"]),
        "folder without images": (["predict", str(model), str(tmp_path / "steel"), "--out",
                                   str(tmp_path / "o")], ["no images in folder"]),
        "cut-out model given to predict": (["predict", "jewellery-cutout", str(img), "--out",
                                            str(tmp_path / "o")],
                                           ["jewellery-cutout is a cutout model",
                                            "needs a defects model"]),
        "defect model given to cutout": (["cutout", str(model), str(img), "--out",
                                          str(tmp_path / "o")],
                                         ["is a defects model", "needs a cutout model"]),
        "URL on the local engine": (["predict", str(model), "s3://line-3/strips/*.jpg", "--out",
                                     str(tmp_path / "o")], ["s3://", "--engine ray"]),
        "unknown engine": (["cutout", str(img), "--out", str(tmp_path / "o"), "--engine",
                            "spark"], ["--engine must be local or ray", "spark"]),
    }


@pytest.mark.parametrize("case", [
    "unknown recipe keys and out-of-range lr", "unknown shipped recipe", "missing model folder",
    "corrupted weights", "unknown class id in CSV", "bad layout", "bad colour",
    "unknown backend", "unknown export format", "missing input path", "glob matching nothing",
    "folder without images", "cut-out model given to predict",
    "defect model given to cutout", "URL on the local engine", "unknown engine"])
def test_user_mistakes_get_one_clear_error(case, tmp_path, model):
    args, words = _mistakes(tmp_path, model)[case]
    result = CliRunner().invoke(app, args)
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out and out.count("error:") == 1, out
    assert all(w in out for w in words), out


def test_remove_refuses_a_defect_model(model):
    import numpy as np

    import seglab
    from seglab.errors import ModelFolderError

    with pytest.raises(ModelFolderError, match="is a defects model"):
        seglab.remove(np.zeros((32, 32, 3), np.uint8), model=str(model))


def test_a_batch_with_only_bad_files_reports_each_and_fails(tmp_path, model):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"GIF89a")
    result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "a.jpg"),
                                      str(tmp_path / "b.png"), "--out", str(tmp_path / "o"),
                                      "--workers", "0"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "a.jpg" in result.output and "b.png" in result.output


def test_cutout_exit_status_says_whether_every_photo_was_processed(tmp_path):
    from seglab.demo import samples_folder

    photo = sorted((samples_folder() / "jewellery" / "images").glob("*.jpg"))[0]
    (tmp_path / "bad.jpg").write_bytes(b"GIF89a")
    runner = CliRunner()
    everything = runner.invoke(app, ["cutout", str(photo), "--out", str(tmp_path / "a"),
                                     "--workers", "0", "--no-review"])
    assert everything.exit_code == 0, everything.output
    some = runner.invoke(app, ["cutout", str(photo), str(tmp_path / "bad.jpg"), "--out",
                               str(tmp_path / "b"), "--workers", "0", "--no-review"])
    assert some.exit_code == 1 and "bad.jpg" in some.output and "Traceback" not in some.output
    assert "1 of 1" in some.output or "0 of 1" in some.output  # the good photo was processed


@pytest.mark.parametrize("args, words", [
    (["train", "cpu-demo", "--data", "x"], ["Missing option '--out'", "train --help"]),
    (["predict", "steel-defects", "a.jpg", "--out", "o", "--bogus"], ["No such option"]),
    (["export", "steel-defects", "--count", "many"], ["Invalid value for '--count'"]),
    (["cutout"], ["Missing argument"]),
])
def test_usage_mistakes_through_the_real_command_are_one_error_line(args, words, tmp_path):
    """Click's own usage errors (missing option, wrong type, unknown flag) follow the same
    contract as seglab's: one `error:` line on stderr, status 2, no usage panel."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "seglab.cli", *args], capture_output=True,
                         text=True, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_evaluate_refuses_a_cut_out_model_and_names_the_label_csvs_it_looked_for(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "jewellery-cutout", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "needs a defects model" in result.output
    from seglab.data.datasets import SeverstalDataset
    from seglab.errors import SeglabError

    (tmp_path / "a.csv").write_text("x\n")
    (tmp_path / "b.csv").write_text("x\n")
    with pytest.raises(SeglabError, match=r"expected train.csv.*found: a.csv, b.csv") as err:
        SeverstalDataset(tmp_path)
    assert "csv=" not in str(err.value)
