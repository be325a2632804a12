"""Recipes: validated YAML files that hold every number a user may change.

A recipe names the model, the data layout, the training schedule, the
post-processing and the gate. The code reads its numbers from here and holds
none of them as constants. Shipped recipes live in ``seglab/recipes/*.yaml``
and are chosen by name (``seglab train severstal-unet-r50``) or by path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from seglab.errors import RecipeError, describe
from seglab.recipes.merging import merge, read_mapping, with_base
from seglab.recipes.merging import merge_overrides as merge_overrides  # re-exported
from seglab.recipes.merging import parse_override as parse_override  # re-exported

M = TypeVar("M", bound=BaseModel)

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Size = tuple[Annotated[int, Field(ge=32, le=8192)], Annotated[int, Field(ge=32, le=8192)]]


class Strict(BaseModel):
    """Unknown keys are an error: a typo in a recipe must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSpec(Strict):
    arch: str = "Unet"
    encoder: str = "resnet50"
    encoder_weights: str | None = None
    """``None`` (random init), ``"imagenet"`` (smp downloads it) or a local weights file."""
    encoder_depth: Annotated[int, Field(ge=3, le=5)] = 5
    in_channels: Annotated[int, Field(ge=1, le=16)] = 3
    classes: list[str] = Field(min_length=1)
    aux_head: bool = False
    """Add smp's auxiliary classification head: one image-level probability per class."""
    aux_dropout: Fraction = 0.2
    decoder_channels: list[Annotated[int, Field(ge=1)]] | None = None
    decoder_interpolation: Literal["nearest", "bilinear"] | None = None
    """How the decoder up-samples (smp's ``decoder_interpolation``; Unet, UnetPlusPlus, FPN,
    MAnet and PAN have it). ``None`` keeps the architecture's default (``nearest`` for the
    U-Net). The U-Net's last block has no skip connection: it sees only half-resolution
    features, repeated 2x2 with ``nearest``, interpolated with ``bilinear``. The two modes
    checked to export to ONNX with PyTorch's logits; no weights depend on it, so a model can
    be fine-tuned from one to the other (``--init``)."""


class Normalization(Strict):
    """Per-channel mean and std on 0-1 RGB (ImageNet's by default, what smp's encoders expect)."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)],
               Annotated[float, Field(gt=0)]] = (0.229, 0.224, 0.225)

    def on_uint8(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std scaled to 0-255 pixels, as float32: what preprocessing subtracts and
        divides by, computed in one place for training, inference and export."""
        return (np.asarray(self.mean, np.float32) * 255.0,
                np.asarray(self.std, np.float32) * 255.0)


class Augment(Strict):
    hflip: Fraction = 0.5
    vflip: Fraction = 0.5
    rotate90: Fraction = 0.0
    """Chance of turning by a random multiple of 90 degrees (0-3 turns): with both flips,
    the whole dihedral group, for square inputs whose defects have no preferred
    direction (steel surface close-ups)."""
    brightness_contrast: Fraction = 0.5
    brightness_limit: Fraction = 0.2
    contrast_limit: Fraction = 0.2
    shift_scale: Fraction = 0.3
    shift_limit: Fraction = 0.05
    scale_limit: Fraction = 0.1


class BackgroundMix(Strict):
    """Proportions of the background kinds (normalised; a kind without photos is skipped)."""

    colour: Annotated[float, Field(ge=0)] = 0.25
    shapes: Annotated[float, Field(ge=0)] = 0.25
    rooms: Annotated[float, Field(ge=0)] = 0.25
    hands: Annotated[float, Field(ge=0)] = 0.25
    studio: Annotated[float, Field(ge=0)] = 0.0
    """Plain packshot sweeps: white, grey, beige or pastel gradients with a contact shadow."""
    texture: Annotated[float, Field(ge=0)] = 0.0
    """Fabric (velvet, linen weave) and wood grain, drawn procedurally."""


class SynthSpec(Strict):
    """How synthetic jewellery composites are made."""

    size: Size = (320, 320)
    mix: BackgroundMix = BackgroundMix()
    area_fraction: tuple[Fraction, Fraction] = (0.08, 0.40)
    """Object area as a fraction of the image, drawn uniformly from this range."""
    rotation: Annotated[float, Field(ge=0, le=180)] = 30.0
    flip: Fraction = 0.5
    off_frame: Fraction = 0.15
    """Share of composites whose object is pushed partly out of the frame."""
    jitter_brightness: Fraction = 0.2
    jitter_contrast: Fraction = 0.2
    jitter_saturation: Fraction = 0.2
    jitter_hue: Annotated[float, Field(ge=0, le=0.5)] = 0.03
    shadow: Fraction = 0.3
    reflection: Fraction = 0.0
    """Share of composites whose piece mirrors the scene around it: polished metal takes the
    colours of its background, which is where a model misses parts of a nose pin or a
    gold bangle (bright pixels reflect most, a strength of 0.2-0.7 is drawn per piece)."""
    tilt: Fraction = 0.0
    """Share of pieces seen from another camera angle (a perspective warp): new outlines
    and openings from the same few real cut-outs."""
    second_piece: Fraction = 0.0
    """Share of composites with a second piece (the same one half the time, as earrings
    come in pairs; else another one, as a set), both drawn at half the area range."""
    background_blur: tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]] = (
        2.0, 8.0)
    """Gaussian sigma range (pixels at composite size) for the blurred backgrounds."""
    shapes_count: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]] = (3, 12)
    min_alpha_opaque: Fraction = 0.01
    """A foreground needs at least this share of opaque and of transparent pixels."""
    max_side: Annotated[int, Field(ge=64, le=8192)] = 1024
    """Foregrounds are cropped to their alpha box and shrunk to this size when loaded."""
    foregrounds: str = "foregrounds"
    """``format: synthetic``: folder of RGBA cut-outs, relative to ``--data``."""
    rooms: str = "rooms"
    """``format: synthetic``: room photos relative to ``--data`` (skipped if absent)."""
    hands: str = "hands"
    """``format: synthetic``: photos of hands relative to ``--data`` (skipped if absent)."""
    jpeg: Fraction = 0.0
    """Share of composites re-encoded as JPEG (marketplace photos are JPEGs)."""
    jpeg_quality: tuple[Annotated[int, Field(ge=5, le=100)], Annotated[int, Field(ge=5, le=100)]] \
        = (40, 95)
    noise: Fraction = 0.0
    """Share of composites with Gaussian sensor noise (sigma 2-8 grey levels)."""
    soften: Fraction = 0.0
    """Share of composites slightly out of focus or shrunk and enlarged again."""
    samples_per_epoch: Annotated[int, Field(ge=1)] = 2000
    """``format: synthetic``: fresh composites drawn per training epoch."""
    val_samples: Annotated[int, Field(ge=1)] = 200
    """``format: synthetic``: fixed validation composites, made from held-back cut-outs."""
    exclude: list[str] = []
    """``format: synthetic``: cut-outs (paths relative to ``foregrounds``) whose alpha is
    known to be wrong, e.g. keyed on white so that highlights became holes: a wrong
    reference teaches holes and scores right masks as wrong. They are dropped after the
    split, so every other cut-out stays on the side of the split it was on."""
    stream_seed: int | None = None
    """``format: synthetic``: seed of the training composites' stream (``None``: ``data.seed``).
    A fine-tuning stage sets its own so that it draws composites the earlier stages never
    saw; the split and the validation composites stay on ``data.seed``, so it must differ
    from ``data.seed + 1`` (the validation stream). ``tools/release_zoo.py`` draws its
    held-out composites from seeds 9000-9003 and 9100-9103: keep clear of those too."""

    TEACHING_ONLY: ClassVar[tuple[str, ...]] = (
        "reflection", "tilt", "second_piece", "jitter_brightness", "jitter_contrast",
        "jitter_saturation", "jitter_hue")
    """Keys that vary the pieces only to teach: measuring draws them at their defaults."""

    def for_measuring(self) -> SynthSpec:
        """This spec with what only teaches at its defaults (no reflections, tilts or second
        pieces, the default colour jitter): the composites models are measured on stay the
        same whatever a recipe trained with."""
        return self.model_copy(update={k: type(self).model_fields[k].default
                                       for k in self.TEACHING_ONLY})


class DataSpec(Strict):
    format: Literal["severstal", "magnetic-tile", "mask-folder", "cutout", "synthetic"]
    input_size: Size | None = None
    """Resize every image to (height, width) for the model; ``None`` keeps full size."""
    inference_size: Size | None = None
    """The size a saved model runs at, when not ``input_size``: a fully convolutional
    net trained on composites at 320 found more of thin chains run at 384 (held-out
    composites: mean IoU 0.880 against 0.862). ``None``: ``input_size``."""
    crop_size: Size | None = None
    """Train on random crops of this size, cut after any resize to ``input_size``;
    validation sees the whole image (at ``input_size``, or full size)."""
    crop_defect_bias: Fraction = 0.0
    """Share of crops centred on a defect pixel: learns fast on rare, small defects."""
    defect_oversample: Annotated[float, Field(ge=1.0, le=100.0)] = 1.0
    """Sampling weight of an image with a defect relative to a defect-free one."""
    mask_threshold: Annotated[int, Field(ge=0, le=255)] = 127
    """Grey level above which an anti-aliased mask pixel counts as foreground."""
    mask_values: dict[int, int] | None = None
    """For value-coded masks (NEU-Seg): pixel value -> class index (0-based)."""
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    seed: int = 42
    normalization: Normalization = Normalization()
    augment: Augment = Augment()
    synth: SynthSpec | None = None
    """For ``format: synthetic``: composites made on the fly from foregrounds and backgrounds."""

    @model_validator(mode="after")
    def _square_for_quarter_turns(self) -> DataSpec:
        trained = self.crop_size or self.input_size
        if self.augment.rotate90 > 0 and (trained is None or trained[0] != trained[1]):
            raise ValueError("augment.rotate90 needs a square training size (crop_size or "
                             "input_size): a quarter turn of a non-square image changes its "
                             f"shape (got {trained})")
        if self.synth is not None and self.synth.stream_seed == self.seed + 1:
            raise ValueError(f"synth.stream_seed {self.synth.stream_seed} is the validation "
                             f"composites' stream (data.seed + 1): pick another")
        return self


class LossSpec(Strict):
    bce: Annotated[float, Field(ge=0)] = 1.0
    dice: Annotated[float, Field(ge=0)] = 0.0
    dice_per_image: bool = False
    """Soft Dice per image and class, then their mean, rather than pooled over the batch:
    the surrogate of a mean of per-image IoUs, so a thin chain counts as much as a large
    pendant in the same batch (pooled, the large pieces' pixels decide the gradient).
    Unlike the Lovasz hinge it keeps pushing probabilities towards 0 and 1. A pair without
    true pixels counts 0 in the mean (smp's rule), so false alarms on an empty image are
    left to BCE. Needs ``dice`` > 0."""
    focal: Annotated[float, Field(ge=0)] = 0.0
    lovasz: Annotated[float, Field(ge=0)] = 0.0
    """Weight of the Lovasz hinge (smp), a surrogate of IoU itself: the usual last stage
    after BCE when the target metric is IoU (Berman et al., 2018)."""
    lovasz_per_image: bool = False
    """Lovasz per image rather than over the whole batch: the surrogate of a mean of
    per-image IoUs (what the cut-out gate report measures) instead of a pooled IoU. With
    several classes, smp pools an image's classes into one hinge."""
    edge_weight: Annotated[float, Field(ge=0)] = 0.0
    """Extra BCE weight on pixels within ``edge_width`` px of a true outline (the pixel
    counts 1 + edge_weight): where a cut-out model's wrong pixels and unsure
    probabilities gather (outlines drawn too fat, thin chains and prongs). It multiplies
    ``pos_weight``; the mean stays over all pixels, so the BCE term grows by about
    1 + edge_weight x the band's share of pixels (its ``val_loss`` is not comparable with
    an unweighted run's)."""
    edge_width: Annotated[int, Field(ge=1, le=16)] = 2
    pos_weight: list[Annotated[float, Field(gt=0)]] | None = None
    aux: Annotated[float, Field(ge=0)] = 0.4
    """Weight of the image-level classification loss when the model has an aux head."""


class TrainSpec(Strict):
    epochs: Annotated[int, Field(ge=1, le=10000)] = 20
    max_steps: Annotated[int, Field(ge=-1)] = -1
    max_minutes: Annotated[float, Field(gt=0)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    lr: Annotated[float, Field(gt=0, le=1.0)] = 3e-4
    weight_decay: Annotated[float, Field(ge=0, le=1.0)] = 0.0
    scheduler: Literal["none", "cosine", "onecycle", "plateau"] = "onecycle"
    warmup_fraction: Fraction = 0.1
    loss: LossSpec = LossSpec()
    precision: Literal["32", "bf16-mixed"] = "32"
    """``bf16-mixed`` autocasts to bfloat16 (2-3x fp32 on CPUs with AMX or AVX512_BF16; on
    CPUs without either, where PyTorch emulates bf16, training runs in fp32 and says so)."""
    channels_last: bool = True
    """Channels-last tensors: faster convolutions on CPU with oneDNN."""
    monitor: Literal["auto", "dice", "dice_gated", "iou"] = "auto"
    """Validation metric that keeps the best checkpoint: mean Dice over image x class
    pairs, the same gated by the image-level head, or IoU pooled over every pixel (the
    segmentation benchmarks' mIoU). ``auto``: gated Dice with a head, else Dice."""
    early_stopping_patience: Annotated[int, Field(ge=0)] = 0
    """Epochs without a better validation score (``monitor``) before stopping; 0 disables."""
    num_workers: Annotated[int, Field(ge=0, le=64)] = 0
    val_every_n_epochs: Annotated[int, Field(ge=1)] = 1
    seed: int = 42
    init_from: str | None = None
    """A model folder or zoo name whose weights start the run (fine-tuning); its
    architecture, encoder and class count must be the recipe's."""

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: object) -> object:
        """YAML and ``--set train.precision=32`` read 32 as a number: accept it."""
        return "32" if value == 32 else value


class CleaningSpec(Strict):
    open_kernel: Annotated[int, Field(ge=0, le=101)] = 3
    """Size of the morphological opening that removes dots and thin lines; 0 disables."""
    min_component_area: Annotated[float, Field(ge=0)] = 0.0005
    """Connected components smaller than this fraction of the image are dropped."""
    fill_holes_area: Annotated[float, Field(ge=0)] = 0.0005
    """Holes smaller than this fraction of the image are filled. For jewellery a trade:
    filled filigree and chain links cost IoU and add low probabilities to the mask the
    gate reads, but unfilled, highlights on shiny metal become pinholes in the cut-out
    (``benchmarks/error_anatomy.py --fill-holes`` measures it)."""


class PostprocessSpec(Strict):
    threshold: Fraction | list[Fraction] = 0.5
    """Pixel probability threshold, one value or one per class."""
    min_area: Annotated[int, Field(ge=0)] | list[Annotated[int, Field(ge=0)]] = 0
    """Masks with fewer pixels (at original resolution) are dropped, per class."""
    classifier_threshold: Fraction | list[Fraction] = 0.5
    """Image-level probability below which a class's mask is dropped."""
    cleaning: CleaningSpec | None = None


class TuneSpec(Strict):
    """Search grids for per-class tuning on the validation split."""

    thresholds: list[Fraction] = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    min_areas: list[Annotated[int, Field(ge=0)]] = [
        0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
    classifier_thresholds: list[Fraction] = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


class GateSpec(Strict):
    min_area_fraction: Fraction = 0.05
    max_area_fraction: Fraction = 0.5
    min_confidence: Fraction = 0.98

    @model_validator(mode="after")
    def _ordered(self) -> GateSpec:
        if self.min_area_fraction > self.max_area_fraction:
            raise ValueError("min_area_fraction must not exceed max_area_fraction")
        return self


class Recipe(Strict):
    name: str
    task: Literal["defects", "cutout"]
    description: str = ""
    model: ModelSpec
    data: DataSpec
    train: TrainSpec = TrainSpec()
    postprocess: PostprocessSpec = PostprocessSpec()
    tune: TuneSpec = TuneSpec()
    gate: GateSpec | None = None

    @model_validator(mode="after")
    def _per_class_lists(self) -> Recipe:
        n = len(self.model.classes)
        for label, value in (
            ("postprocess.threshold", self.postprocess.threshold),
            ("postprocess.min_area", self.postprocess.min_area),
            ("postprocess.classifier_threshold", self.postprocess.classifier_threshold),
            ("train.loss.pos_weight", self.train.loss.pos_weight),
        ):
            if isinstance(value, list) and len(value) != n:
                raise ValueError(f"{label} has {len(value)} values but the model has {n} classes")
        if self.task == "cutout" and n != 1:
            raise ValueError("a cutout recipe has exactly one class (the foreground)")
        return self


def shipped() -> dict[str, Path]:
    """Names and paths of the recipes shipped with seglab."""
    folder = resources.files("seglab") / "recipes"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def load_recipe(name_or_path: str | Path, overrides: dict | None = None) -> Recipe:
    """Load and validate a recipe by shipped name or YAML path.

    Raises :class:`RecipeError` listing every invalid or unknown key.
    """
    path = Path(name_or_path)
    if not path.exists():
        known = shipped()
        if str(name_or_path) in known:
            path = known[str(name_or_path)]
        else:
            raise RecipeError(
                f"recipe {name_or_path!r} not found: not a file, and not one of the shipped "
                f"recipes ({', '.join(sorted(known))})")
    data = with_base(read_mapping(path, "recipe"), path, frozenset({path.resolve()}))
    if overrides:
        data = merge(data, overrides)
    return validate(Recipe, data, f"recipe {path}")


def load_validated(cls: type[M], path: Path, overrides: dict | None, what: str) -> M:
    """A YAML file validated as ``cls`` after ``overrides``; every problem in one error."""
    data = read_mapping(path, what)
    if overrides:
        data = merge(data, overrides)
    return validate(cls, data, f"{what} {path}")


def validate(cls: type[M], data: dict, label: str) -> M:
    """``cls`` from ``data``, or one :class:`RecipeError` listing every invalid key."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"{label} is invalid: {describe(exc.errors())}") from None
