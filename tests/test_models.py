from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import seglab
from seglab.errors import ModelFolderError
from seglab.models import folder as modelfolder
from seglab.models.network import build, count_parameters
from seglab.recipes import ModelSpec, load_recipe

TINY = ModelSpec(arch="Unet", encoder="resnet18", encoder_depth=3, decoder_channels=[16, 8, 4],
                 classes=["a", "b"], aux_head=True)


def test_any_input_size_is_padded_and_cropped_back():
    net = build(TINY).eval()
    with torch.no_grad():
        masks, labels = net(torch.randn(1, 3, 37, 91))
    assert masks.shape == (1, 2, 37, 91) and labels.shape == (1, 2)


def test_without_aux_head_image_score_is_max_logit():
    net = build(TINY.model_copy(update={"aux_head": False})).eval()
    with torch.no_grad():
        masks, labels = net(torch.randn(2, 3, 16, 24))
    torch.testing.assert_close(labels, masks.flatten(2).amax(2))


@pytest.mark.parametrize("arch", ["Unet", "FPN", "DeepLabV3Plus"])
def test_architectures_by_name(arch):
    spec = ModelSpec(arch=arch, encoder="resnet18", classes=["x"])
    net = build(spec).eval()
    with torch.no_grad():
        masks, _ = net(torch.randn(1, 3, 64, 96))
    assert masks.shape == (1, 1, 64, 96)


def test_timm_universal_encoder():
    spec = ModelSpec(encoder="tu-mobilenetv3_small_050", classes=["x"], encoder_depth=5)
    net = build(spec).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64))[0].shape == (1, 1, 64, 64)


def test_local_encoder_weights_file(tmp_path):
    from safetensors.torch import save_file

    donor = build(TINY)
    path = tmp_path / "enc.safetensors"
    save_file({k: v.contiguous() for k, v in donor.net.encoder.state_dict().items()}, str(path))
    net = build(TINY.model_copy(update={"encoder_weights": str(path)}))
    for key, value in donor.net.encoder.state_dict().items():
        torch.testing.assert_close(net.net.encoder.state_dict()[key], value)
    bad = tmp_path / "bad.safetensors"
    save_file({"nothing": torch.zeros(1)}, str(bad))
    with pytest.raises(ModelFolderError, match="do not fit encoder"):
        build(TINY.model_copy(update={"encoder_weights": str(bad)}))


def test_parameter_count_is_real():
    net = build(load_recipe("severstal-unet-r50").model)
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())
    assert 30_000_000 < count_parameters(net) < 36_000_000  # U-Net ResNet50 with aux head


def _saved(tmp_path):
    recipe = load_recipe("cpu-demo")
    recipe = recipe.model_copy(update={"model": TINY.model_copy(update={"classes": list("abcd")})})
    torch.manual_seed(0)
    net = build(recipe.model)
    config = modelfolder.ModelConfig.from_recipe(recipe)
    return net, modelfolder.save(tmp_path / "model", net, config)


def test_save_and_load_model_folder(tmp_path):
    net, folder = _saved(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                          "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model"]["encoder"] == "resnet18" and config["input_size"] is None
    assert config["seglab_version"] == seglab.__version__
    predictor = seglab.load_model(folder)
    image = np.random.default_rng(0).integers(0, 255, (50, 300, 3), dtype=np.uint8)
    pred = predictor.predict(image)
    assert pred.probs.shape == (4, 50, 300) and pred.masks.shape == (4, 50, 300)
    assert pred.class_probs.shape == (4,)
    # The same weights give the same numbers as the in-memory network.
    x = torch.from_numpy(predictor.preprocess(image)[None])
    with torch.no_grad():
        expected = torch.sigmoid(net.eval()(x)[1]).numpy()[0]
    np.testing.assert_allclose(pred.class_probs, expected, rtol=1e-5, atol=1e-6)
    # The weights load into a plain smp model, without seglab.
    import segmentation_models_pytorch as smp
    from safetensors.torch import load_file

    plain = smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None,
                             encoder_depth=3, decoder_channels=[16, 8, 4], classes=4,
                             aux_params={"classes": 4})
    plain.load_state_dict(load_file(str(folder / "model.safetensors")))


def test_broken_model_folders_say_what_is_wrong(tmp_path):
    _, folder = _saved(tmp_path)
    with pytest.raises(ModelFolderError, match="model folder not found"):
        seglab.load_model(tmp_path / "nowhere")
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    with pytest.raises(ModelFolderError, match="corrupted or truncated"):
        seglab.load_model(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match=r"no model\.safetensors"):
        seglab.load_model(folder)
    (folder / "model.safetensors").write_bytes(weights)
    config = json.loads((folder / "config.json").read_text())
    config["model"]["classes"] = ["a", "b"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=r"tensors of the wrong shape"):
        seglab.load_model(folder)
    config["model"]["encoder"] = "resnet34"
    config["model"]["classes"] = list("abcd")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=r"does not match config\.json"):
        seglab.load_model(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        seglab.load_model(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ModelFolderError, match=r"config\.json is missing"):
        seglab.load_model(folder)


def test_a_model_runs_at_its_recipes_inference_size(tmp_path):
    """``data.inference_size`` is what a saved model runs at; training keeps ``input_size``."""
    recipe = load_recipe("jewellery-cutout-cpu-bf16", {"model": {"encoder": "resnet18",
                                                                  "encoder_depth": 3,
                                                                  "decoder_channels": [8, 8, 8]}})
    assert recipe.data.input_size == (320, 320) and recipe.data.inference_size == (384, 384)
    net = build(recipe.model)
    folder = modelfolder.save(tmp_path / "m", net, modelfolder.ModelConfig.from_recipe(recipe))
    predictor = seglab.load_model(folder)
    assert predictor.input_size == (384, 384)
    seen, run = [], predictor.backend

    def recording(x):
        seen.append(x.shape)
        return run(x)

    predictor.backend = recording
    cut = seglab.remove(np.zeros((200, 500, 3), np.uint8), model=predictor)
    assert seen == [(1, 3, 384, 384)] and cut.probs.shape == (200, 500)
    plain = load_recipe("jewellery-cutout-cpu")
    assert modelfolder.ModelConfig.from_recipe(plain).input_size == (224, 224)


def test_decoder_interpolation_is_kept_with_the_model(tmp_path):
    """A bilinear decoder has the same weights as the nearest one (so ``--init`` can switch
    a trained model), gives other logits, and is rebuilt as such from the folder."""
    nearest = build(TINY.model_copy(update={"aux_head": False})).eval()
    spec = TINY.model_copy(update={"aux_head": False, "decoder_interpolation": "bilinear"})
    bilinear = build(spec).eval()
    bilinear.load_state_dict(nearest.state_dict())
    assert {m.interpolation_mode for m in bilinear.modules()
            if type(m).__name__ == "UnetDecoderBlock"} == {"bilinear"}
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = nearest(x)[0], bilinear(x)[0]
    assert a.shape == b.shape and float((a - b).abs().max()) > 1e-4
    recipe = load_recipe("cpu-demo")
    config = modelfolder.ModelConfig.from_recipe(recipe.model_copy(update={"model": spec}))
    modelfolder.save(tmp_path / "m", bilinear, config)
    loaded, saved = modelfolder.load_net(tmp_path / "m")
    assert saved.model.decoder_interpolation == "bilinear"
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x)[0], b)
    with pytest.raises(ValueError, match="DeepLabV3 has no such option"):
        build(ModelSpec(arch="DeepLabV3", encoder="resnet18", classes=["x"],
                        decoder_interpolation="bilinear"))


def test_decoder_interpolation_architectures_are_smps_own():
    """The architectures seglab lets set ``decoder_interpolation`` are exactly those whose smp
    class takes it: the others pass unknown keywords on to the encoder, where it would fail
    obscurely."""
    import inspect

    import segmentation_models_pytorch as smp

    from seglab.models.network import INTERPOLATING_ARCHS

    takes = {name.lower() for name, cls in smp.MODEL_ARCHITECTURES_MAPPING.items()
             if "decoder_interpolation" in inspect.signature(cls).parameters}
    assert takes == INTERPOLATING_ARCHS


def test_soup_is_the_mean_of_the_weights_and_refuses_other_architectures(tmp_path):
    from typer.testing import CliRunner

    from seglab.cli import app
    from seglab.models.soup import soup

    tiny = {"model": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}
    recipe = load_recipe("cpu-demo", tiny)
    config = modelfolder.ModelConfig.from_recipe(recipe)
    folders = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        net = build(recipe.model)
        with torch.no_grad():  # batch-norm statistics differ too, as after training
            for module in net.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.normal_()
        folders.append(modelfolder.save(tmp_path / f"m{seed}", net, config))
    states = [modelfolder.load_net(f)[0].net.state_dict() for f in folders]
    result = CliRunner().invoke(app, ["soup", *map(str, folders), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    mixed, mixed_config = modelfolder.load_net(tmp_path / "s")
    floats = 0
    for key, value in mixed.net.state_dict().items():
        if value.is_floating_point():
            floats += 1
            torch.testing.assert_close(value, sum(s[key] for s in states) / 3)
    assert floats > 20 and not torch.equal(states[0]["encoder.conv1.weight"],
                                           states[1]["encoder.conv1.weight"])
    assert mixed_config.training["soup"] == [str(f) for f in folders]
    assert mixed_config.metrics == {} and mixed_config.postprocess == config.postprocess
    prediction = seglab.load_model(tmp_path / "s").predict(np.zeros((64, 96, 3), np.uint8))
    assert prediction.masks.shape[1:] == (64, 96)

    other = load_recipe("cpu-demo", {"model": {"encoder_depth": 3,
                                               "decoder_channels": [8, 8, 4]}})
    odd = modelfolder.save(tmp_path / "odd", build(other.model),
                           modelfolder.ModelConfig.from_recipe(other))
    with pytest.raises(ModelFolderError, match=r"model.decoder_channels .*only models of one"):
        soup([folders[0], odd], tmp_path / "bad")
    # The decoder's up-sampling holds no weights: v7 averages nearest and bilinear members.
    bilinear = recipe.model.model_copy(update={"decoder_interpolation": "bilinear"})
    torch.manual_seed(3)
    other_up = modelfolder.save(tmp_path / "bilinear", build(bilinear),
                                config.model_copy(update={"model": bilinear}))
    assert soup([folders[0], other_up], tmp_path / "mixed").is_dir()
    with pytest.raises(ModelFolderError, match="two models or more"):
        soup(folders[:1], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
