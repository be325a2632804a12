"""Building segmentation models with segmentation_models_pytorch.

``build(spec)`` turns a recipe's model section into an smp model (any smp
architecture, any smp or ``tu-`` timm encoder) wrapped in :class:`SegmentationNet`,
which pads inputs of any size to the encoder's stride and crops the output back,
and always returns ``(mask_logits, class_logits)``.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ModelFolderError
from seglab.recipes import ModelSpec


class SegmentationNet(nn.Module):
    """An smp model that accepts any input size and always yields image-level scores.

    Inputs are reflect-padded up to a multiple of the encoder's output stride
    (32 for depth 5) and the logits cropped back, so a 256x1600 strip or a
    333x517 photo both work. Without an auxiliary head, the image-level logit
    of a class is the maximum of its pixel logits (its "max probability").
    """

    def __init__(self, net: nn.Module, stride: int, has_aux: bool) -> None:
        super().__init__()
        self.net = net
        self.stride = stride
        self.has_aux = has_aux

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = x.shape[-2:]
        pad_h = (-height) % self.stride
        pad_w = (-width) % self.stride
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        out = self.net(x)
        if self.has_aux:
            masks, labels = out
        else:
            masks = out
        masks = masks[..., :height, :width]
        if not self.has_aux:
            labels = masks.flatten(2).amax(dim=2)
        return masks, labels


def output_stride(spec: ModelSpec) -> int:
    return 2 ** spec.encoder_depth


# smp architectures whose decoders take ``decoder_interpolation`` (smp 0.6; a test
# checks the list against smp's own signatures).
INTERPOLATING_ARCHS = frozenset({"unet", "unetplusplus", "fpn", "manet", "pan"})


def _smp_kwargs(spec: ModelSpec, weights: str | None) -> dict:
    kwargs: dict = {
        "encoder_name": spec.encoder,
        "encoder_weights": weights,
        "encoder_depth": spec.encoder_depth,
        "in_channels": spec.in_channels,
        "classes": len(spec.classes),
    }
    if spec.decoder_channels is not None:
        if len(spec.decoder_channels) != spec.encoder_depth:
            raise ValueError(
                f"decoder_channels needs {spec.encoder_depth} values (one per encoder stage), "
                f"got {len(spec.decoder_channels)}")
        kwargs["decoder_channels"] = list(spec.decoder_channels)
    if spec.decoder_interpolation is not None:
        if spec.arch.lower() not in INTERPOLATING_ARCHS:
            raise ValueError(
                f"model.decoder_interpolation: smp's {spec.arch} has no such option "
                f"(only {', '.join(sorted(INTERPOLATING_ARCHS))})")
        kwargs["decoder_interpolation"] = spec.decoder_interpolation
    if spec.aux_head:
        kwargs["aux_params"] = {"classes": len(spec.classes), "dropout": spec.aux_dropout}
    return kwargs


def build(spec: ModelSpec, *, pretrained: bool = True) -> SegmentationNet:
    """Make the model a recipe describes.

    ``encoder_weights`` may be ``None``, a name smp knows (``"imagenet"``,
    downloaded by smp on first use) or a path to a local ``.safetensors`` /
    ``.pth`` file holding the encoder's state dict (for machines without
    internet). ``pretrained=False`` skips loading weights (used when a saved
    model's own weights are loaded right after).
    """
    weights = spec.encoder_weights if pretrained else None
    local = weights is not None and (Path(weights).suffix in {".pth", ".pt", ".safetensors"}
                                     or Path(weights).exists())
    net = smp.create_model(spec.arch, **_smp_kwargs(spec, None if local else weights))
    if local:
        load_encoder_weights(net, Path(weights))  # type: ignore[arg-type]
    return SegmentationNet(net, output_stride(spec), spec.aux_head)


def load_encoder_weights(net: nn.Module, path: Path) -> None:
    """Load an encoder state dict from a local file, reporting mismatches clearly."""
    if not path.exists():
        raise ModelFolderError(f"encoder weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    encoder = net.encoder  # type: ignore[attr-defined]
    # Checkpoints of a whole smp model prefix encoder keys with "encoder.".
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    # Classification checkpoints (timm/torchvision) carry a head the encoder does not have.
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or wrong:
        raise ModelFolderError(
            f"encoder weights {path} do not fit encoder: {len(missing)} missing keys "
            f"(first: {missing[:3]}), {len(wrong)} of the wrong shape (first: {wrong[:3]})")
    # smp encoders override load_state_dict (and return None), so check keys above.
    encoder.load_state_dict({k: state[k] for k in expected})


def count_parameters(model: nn.Module) -> int:
    """The real number of parameters of a model, as a model card reports it."""
    return sum(p.numel() for p in model.parameters())
