from __future__ import annotations

import pytest

from seglab.errors import RecipeError
from seglab.recipes import load_recipe, parse_override, shipped


def test_every_shipped_recipe_validates():
    names = set(shipped())
    assert {"severstal-unet-r50", "magnetic-tile", "neu-seg", "jewellery-unet-effb3",
            "cpu-demo"} <= names
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name


def test_mission_recipes_hold_the_mission_numbers():
    steel = load_recipe("severstal-unet-r50")
    assert (steel.model.arch, steel.model.encoder) == ("Unet", "resnet50")
    assert steel.data.input_size == (128, 800) and len(steel.model.classes) == 4
    jewel = load_recipe("jewellery-unet-effb3")
    assert jewel.model.encoder == "efficientnet-b3" and jewel.model.classes == ["foreground"]
    assert jewel.gate is not None
    assert (jewel.gate.min_area_fraction, jewel.gate.max_area_fraction,
            jewel.gate.min_confidence) == (0.05, 0.5, 0.98)


def _write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


BASE = """
name: t
task: defects
model: {classes: [a, b]}
data: {format: severstal}
"""


def test_unknown_key_is_an_error(tmp_path):
    with pytest.raises(RecipeError, match=r"train.learning_rate: Extra inputs are not permitted"):
        load_recipe(_write(tmp_path, BASE + "train: {learning_rate: 0.1}\n"))


def test_out_of_range_numbers(tmp_path):
    with pytest.raises(RecipeError, match=r"train.lr: Input should be less than or equal to 1"):
        load_recipe(_write(tmp_path, BASE + "train: {lr: 5}\n"))
    with pytest.raises(RecipeError, match=r"postprocess.threshold"):
        load_recipe(_write(tmp_path, BASE + "postprocess: {threshold: 1.5}\n"))
    with pytest.raises(RecipeError, match="min_area_fraction must not exceed max_area_fraction"):
        gate = "gate: {min_area_fraction: 0.6, max_area_fraction: 0.5}\n"
        load_recipe(_write(tmp_path, BASE + gate))


def test_per_class_lists_must_match_classes(tmp_path):
    with pytest.raises(RecipeError, match=r"postprocess\.min_area has 3 values but the model"):
        load_recipe(_write(tmp_path, BASE + "postprocess: {min_area: [1, 2, 3]}\n"))


def test_quarter_turns_need_a_square_training_size(tmp_path):
    turn = "  augment: {rotate90: 0.5}\n"
    with pytest.raises(RecipeError, match=r"rotate90 needs a square training size .*\(128, 800\)"):
        load_recipe(_write(tmp_path, BASE.replace("data: {format: severstal}",
                                                  "data:\n  format: severstal\n"
                                                  "  input_size: [128, 800]\n") + turn))
    with pytest.raises(RecipeError, match=r"rotate90 needs a square training size .*None"):
        load_recipe(_write(tmp_path, BASE.replace("data: {format: severstal}",
                                                  "data:\n  format: severstal\n") + turn))
    with pytest.raises(RecipeError, match=r"rotate90 needs a square training size .*\(128, 256\)"):
        load_recipe(_write(tmp_path, BASE.replace(
            "data: {format: severstal}",
            "data:\n  format: severstal\n  input_size: [256, 256]\n  crop_size: [128, 256]\n")
            + turn))
    square = load_recipe(_write(tmp_path, BASE.replace(
        "data: {format: severstal}",
        "data:\n  format: severstal\n  input_size: [128, 800]\n  crop_size: [128, 128]\n")
        + turn))
    assert square.data.augment.rotate90 == 0.5


def test_missing_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe("no-such-recipe")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(_write(tmp_path, "name: [unclosed\n"))


def test_overrides_merge_and_validate():
    recipe = load_recipe("cpu-demo", parse_override("train.lr=0.01"))
    assert recipe.train.lr == 0.01
    # The Makefile's ZOO_FP32 override: YAML reads 32 as a number.
    assert load_recipe("steel-defects-d4",
                       parse_override("train.precision=32")).train.precision == "32"
    with pytest.raises(RecipeError, match=r"train\.precision"):
        load_recipe("cpu-demo", parse_override("train.precision=16"))
    with pytest.raises(RecipeError, match=r"train\.epochs"):
        load_recipe("cpu-demo", parse_override("train.epochs=0"))


def test_a_recipe_builds_on_a_base(tmp_path):
    (tmp_path / "first.yaml").write_text(BASE + "train: {lr: 0.01, epochs: 7}\n")
    stage = tmp_path / "second.yaml"
    stage.write_text("name: second\nbase: first.yaml\ntrain: {lr: 0.002}\n")
    recipe = load_recipe(stage, parse_override("train.batch_size=3"))
    first = load_recipe(tmp_path / "first.yaml")
    # Its own keys win, mappings merge key by key, the rest comes from the base.
    assert (recipe.name, recipe.train.lr, recipe.train.epochs, recipe.train.batch_size) == (
        "second", 0.002, 7, 3)
    assert recipe.model == first.model and recipe.data == first.data
    # A shipped name works as a base too; the loss mapping merges into the base's.
    shipped_stage = tmp_path / "lovasz.yaml"
    shipped_stage.write_text("name: mine\nbase: jewellery-cutout-cpu-512\n"
                             "train: {loss: {lovasz: 0.25}}\n")
    mine, stage6 = load_recipe(shipped_stage), load_recipe("jewellery-cutout-cpu-512")
    assert (mine.train.loss.bce, mine.train.loss.dice, mine.train.loss.lovasz) == (
        stage6.train.loss.bce, stage6.train.loss.dice, 0.25) == (1.0, 0.5, 0.25)
    assert mine.data == stage6.data and mine.data.input_size == (512, 512)


def test_shipped_stages_say_only_what_changes():
    stage5 = load_recipe("jewellery-cutout-cpu-448")
    stage6 = load_recipe("jewellery-cutout-cpu-512")
    assert stage6.data.input_size == stage6.data.synth.size == (512, 512)
    assert stage6.data.synth.mix == stage5.data.synth.mix and stage6.gate == stage5.gate
    assert (stage5.train.epochs, stage6.train.epochs) == (12, 8)
    stage7 = load_recipe("jewellery-cutout-cpu-lovasz")
    assert stage7.data.synth.stream_seed not in (None, stage7.data.seed)
    assert stage7.train.loss.lovasz_per_image and stage7.train.loss.bce == 1.0
    with pytest.raises(RecipeError, match="validation composites' stream"):
        load_recipe("jewellery-cutout-cpu-lovasz", {"data": {"synth": {"stream_seed": 8}}})
    edges = load_recipe("jewellery-cutout-cpu-edges")
    assert (edges.train.loss.edge_weight, edges.train.loss.edge_width, edges.train.loss.bce,
            edges.data.input_size) == (4.0, 2, 1.0, (512, 512))
    # A stream of its own: neither stages 1-6's (data.seed) nor the Lovasz try's composites.
    assert stage6.data.synth.stream_seed is None
    assert edges.data.synth.stream_seed not in (stage7.data.synth.stream_seed, stage6.data.seed)
    dice = load_recipe("jewellery-cutout-cpu-dice")
    assert (dice.train.loss.dice_per_image, dice.train.loss.dice, dice.train.loss.bce,
            dice.train.loss.edge_weight, dice.data.input_size) == (True, 0.5, 1.0, 0.0, (512, 512))
    assert dice.data.synth.stream_seed not in (
        stage7.data.synth.stream_seed, edges.data.synth.stream_seed, stage6.data.seed)
    # The bilinear try changes the decoder's up-sampling and nothing else in the model or
    # the loss, on a stream of its own.
    bilinear = load_recipe("jewellery-cutout-cpu-bilinear")
    assert stage6.model.decoder_interpolation is None
    assert bilinear.model == stage6.model.model_copy(update={"decoder_interpolation": "bilinear"})
    assert bilinear.train.loss == stage6.train.loss and bilinear.data.input_size == (512, 512)
    assert bilinear.data.synth.stream_seed not in (
        stage7.data.synth.stream_seed, edges.data.synth.stream_seed,
        dice.data.synth.stream_seed, stage6.data.seed)
    # The reflection try: the bilinear stage plus mirrored scenes, on a stream of its own.
    reflect = load_recipe("jewellery-cutout-cpu-reflect")
    assert reflect.model == bilinear.model and reflect.train.loss == bilinear.train.loss
    assert (reflect.data.synth.reflection, bilinear.data.synth.reflection) == (0.5, 0.0)
    assert reflect.data.synth.model_copy(update={"reflection": 0.0, "stream_seed": None}) == \
        bilinear.data.synth.model_copy(update={"stream_seed": None})
    assert reflect.data.synth.stream_seed not in (
        stage7.data.synth.stream_seed, edges.data.synth.stream_seed,
        dice.data.synth.stream_seed, bilinear.data.synth.stream_seed, stage6.data.seed)
    # The variety try: the reflection stage plus tilts, second pieces and more recolouring.
    variety = load_recipe("jewellery-cutout-cpu-variety")
    assert variety.model == reflect.model and variety.train.loss == reflect.train.loss
    assert (variety.data.synth.tilt, variety.data.synth.second_piece,
            variety.data.synth.jitter_saturation) == (0.5, 0.33, 0.4)
    assert variety.data.synth.model_copy(update={
        "tilt": 0.0, "second_piece": 0.0, "jitter_saturation": 0.2,
        "stream_seed": reflect.data.synth.stream_seed}) == reflect.data.synth
    assert variety.data.synth.stream_seed not in (
        stage7.data.synth.stream_seed, edges.data.synth.stream_seed, dice.data.synth.stream_seed,
        bilinear.data.synth.stream_seed, reflect.data.synth.stream_seed, stage6.data.seed)
    # The clean try: v6's stage on the cleaned pieces (the exclusion is every recipe's), on
    # a stream of its own; the model, loss and composites are stage 6's.
    clean = load_recipe("jewellery-cutout-cpu-clean")
    assert clean.model == stage6.model and clean.train.loss == stage6.train.loss
    assert clean.data.synth.model_copy(update={"stream_seed": None}) == stage6.data.synth
    assert clean.data.synth.stream_seed not in (
        stage7.data.synth.stream_seed, edges.data.synth.stream_seed, dice.data.synth.stream_seed,
        bilinear.data.synth.stream_seed, reflect.data.synth.stream_seed,
        variety.data.synth.stream_seed, stage6.data.seed)


def test_bad_bases_are_named(tmp_path):
    def write(name: str, text: str):
        (tmp_path / name).write_text(text)
        return tmp_path / name

    with pytest.raises(RecipeError, match="base 'nowhere' is neither a shipped recipe"):
        load_recipe(write("a.yaml", "name: a\nbase: nowhere\n"))
    with pytest.raises(RecipeError, match="needs its own name"):
        load_recipe(write("b.yaml", "base: cpu-demo\n"))
    write("c.yaml", "name: c\nbase: d.yaml\n")
    with pytest.raises(RecipeError, match="leads back to itself"):
        load_recipe(write("d.yaml", "name: d\nbase: c.yaml\n"))
    with pytest.raises(RecipeError, match="base must be a recipe name"):
        load_recipe(write("e.yaml", "name: e\nbase: [cpu-demo]\n"))


@pytest.mark.parametrize("stages", [
    ("jewellery-cutout-cpu", "jewellery-cutout-cpu-continue", "jewellery-cutout-cpu-bf16",
     "jewellery-cutout-cpu-384", "jewellery-cutout-cpu-448", "jewellery-cutout-cpu-512",
     "jewellery-cutout-cpu-lovasz", "jewellery-cutout-cpu-edges",
     "jewellery-cutout-cpu-dice", "jewellery-cutout-cpu-bilinear",
     "jewellery-cutout-cpu-reflect", "jewellery-cutout-cpu-variety",
     "jewellery-cutout-cpu-clean"),
    # `make zoo-jewellery-cutout ZOO_SCALE=`: the accelerator recipe as the first stage.
    ("jewellery-cutout", "jewellery-cutout-cpu-continue", "jewellery-cutout-cpu-bf16",
     "jewellery-cutout-cpu-384", "jewellery-cutout-cpu-448", "jewellery-cutout-cpu-512",
     "jewellery-cutout-cpu-lovasz", "jewellery-cutout-cpu-edges",
     "jewellery-cutout-cpu-dice", "jewellery-cutout-cpu-bilinear",
     "jewellery-cutout-cpu-reflect", "jewellery-cutout-cpu-variety",
     "jewellery-cutout-cpu-clean"),
    ("steel-defects", "steel-defects-long", "steel-defects-d4"),
    ("magnetic-tile-zoo", "magnetic-tile-zoo-2", "magnetic-tile-zoo-3"),
])
def test_zoo_stages_keep_one_split(stages):
    """Each stage starts from the last one's weights: a different split seed or share
    would train on what the earlier stages held back, and the held-out figures would lie."""
    recipes = [load_recipe(name) for name in stages]
    first = recipes[0]
    for recipe in recipes[1:]:
        assert (recipe.data.seed, recipe.data.val_fraction, recipe.data.format) == (
            first.data.seed, first.data.val_fraction, first.data.format), recipe.name
        # The same network, so each stage's weights load into the next; how the decoder
        # up-samples holds no weights and may change.
        assert (recipe.model.model_copy(update={"decoder_interpolation": None})
                == first.model.model_copy(update={"decoder_interpolation": None})), recipe.name
    if first.data.synth is not None:
        assert {r.data.synth.foregrounds for r in recipes} == {first.data.synth.foregrounds}
        # The same cut-outs left out, or the held-out composites would differ by stage.
        assert all(r.data.synth.exclude == first.data.synth.exclude for r in recipes)
