"""The LightningModule seglab trains: the recipe's network with its loss (BCE, optionally
weighted on a band around true outlines, Dice, focal, Lovasz, the image-level head's BCE),
optimiser and schedule, and the validation metrics the best checkpoint is chosen by.
``trainer.train`` runs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from seglab.data.files import write_text_atomic
from seglab.errors import RecipeError
from seglab.infer.postprocess import per_class
from seglab.metrics import dice_pairs, overlap_counts
from seglab.models import folder as modelfolder
from seglab.models.network import build
from seglab.recipes import Recipe

MONITOR = "val_mean_dice"
GATED = "val_mean_dice_gated"
IOU = "val_mean_iou"


def monitor_of(recipe: Recipe) -> str:
    """The metric that picks the best checkpoint (``train.monitor``). ``auto`` is the
    validation mean Dice of the pipeline as deployed, i.e. gated by the image-level head
    when the model has one (raw pixel thresholding scores false alarms on defect-free
    images, which the gate removes)."""
    choice = recipe.train.monitor
    if choice == "auto":
        return GATED if recipe.model.aux_head else MONITOR
    return {"dice": MONITOR, "dice_gated": GATED, "iou": IOU}[choice]


def edge_band(mask: torch.Tensor, width: int) -> torch.Tensor:
    """1 on pixels within ``width`` px (chessboard distance) of an outline of ``mask``
    (N, C, H, W, values 0/1), on either side, else 0. Dilation minus erosion by max
    pooling (on a soft mask, the local max minus min): a few tensor operations on the
    batch already on the device, which a distance-transform library would need to copy to
    the CPU for."""
    size = 2 * width + 1
    grown = F.max_pool2d(mask, size, stride=1, padding=width)
    shrunk = -F.max_pool2d(-mask, size, stride=1, padding=width)
    return grown - shrunk


class Segmenter(L.LightningModule):
    """The recipe's model with its loss, optimiser, schedule and validation Dice."""

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.save_hyperparameters({"recipe": recipe.model_dump(mode="json")})
        self.recipe = recipe
        self.net = build(recipe.model)
        if recipe.train.init_from:
            init_weights(self.net, recipe.train.init_from)
        spec = recipe.train.loss
        n = len(recipe.model.classes)
        pos = per_class(spec.pos_weight if spec.pos_weight else 1.0, n)
        self.register_buffer("pos_weight", torch.tensor(pos, dtype=torch.float32).view(n, 1, 1))
        self.dice_loss = smp.losses.DiceLoss("multilabel", from_logits=True) if spec.dice else None
        self.focal_loss = smp.losses.FocalLoss("multilabel") if spec.focal else None
        self.lovasz_loss = (smp.losses.LovaszLoss("multilabel", per_image=spec.lovasz_per_image)
                            if spec.lovasz else None)
        self._val: list[torch.Tensor] = []
        self.validated_step = -1
        """The training step whose weights were last validated (kept in checkpoints)."""
        self.thresholds = torch.tensor(per_class(recipe.postprocess.threshold, n),
                                       dtype=torch.float32)

    def on_fit_start(self) -> None:
        if self.recipe.train.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def on_train_epoch_start(self) -> None:
        # Augmentation and dropout randomness depends only on (seed, epoch), like the
        # sampler's order, so a resumed run repeats the uninterrupted one.
        L.seed_everything(self.recipe.train.seed * 1000 + self.current_epoch, workers=True,
                          verbose=False)
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        transform = getattr(dataset, "transform", None)
        if hasattr(transform, "set_random_seed"):
            transform.set_random_seed(self.recipe.train.seed * 1000 + self.current_epoch)
        # On-the-fly synthetic data draws new composites every epoch.
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.recipe.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def loss(self, logits: torch.Tensor, cls_logits: torch.Tensor, batch: dict
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        spec = self.recipe.train.loss
        mask = batch["mask"]
        parts: dict[str, torch.Tensor] = {}
        if spec.bce:
            weight = edge_band(mask, spec.edge_width) * spec.edge_weight + 1.0 \
                if spec.edge_weight else None
            parts["bce"] = spec.bce * F.binary_cross_entropy_with_logits(
                logits.float(), mask, weight=weight, pos_weight=self.pos_weight)
        if self.dice_loss is not None:
            if spec.dice_per_image:  # each image x class its own channel of one sample
                parts["dice"] = spec.dice * self.dice_loss(
                    logits.float().reshape(1, -1, *logits.shape[2:]),
                    mask.reshape(1, -1, *mask.shape[2:]))
            else:
                parts["dice"] = spec.dice * self.dice_loss(logits.float(), mask)
        if self.focal_loss is not None:
            parts["focal"] = spec.focal * self.focal_loss(logits.float(), mask)
        if self.lovasz_loss is not None:
            parts["lovasz"] = spec.lovasz * self.lovasz_loss(logits.float(), mask)
        if self.recipe.model.aux_head and spec.aux:
            parts["aux"] = spec.aux * F.binary_cross_entropy_with_logits(
                cls_logits.float(), batch["labels"])
        return torch.stack(list(parts.values())).sum(), parts

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits, cls_logits = self(batch["image"])
        total, parts = self.loss(logits, cls_logits, batch)
        size = batch["image"].shape[0]
        self.log("train_loss", total, prog_bar=True, batch_size=size)
        for name, value in parts.items():
            self.log(f"train_{name}", value, batch_size=size)
        return total

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits, cls_logits = self(batch["image"])
        total, _ = self.loss(logits, cls_logits, batch)
        self.log("val_loss", total, batch_size=batch["image"].shape[0], sync_dist=True)
        probs = torch.sigmoid(logits.float())
        pred = probs >= self.thresholds.to(probs.device).view(1, -1, 1, 1)
        gate = (torch.sigmoid(cls_logits.float()) >= 0.5)[..., None, None]
        inter, union = overlap_counts(pred, batch["mask"])
        self._val.append(torch.stack([dice_pairs(pred, batch["mask"]).to(probs.device),
                                      dice_pairs(pred & gate, batch["mask"]).to(probs.device),
                                      dice_pairs(pred, batch["mask"], smooth=1.0).to(probs.device),
                                      (batch["mask"].flatten(2).amax(2) > 0).float(),
                                      inter.to(probs.device).float(),
                                      union.to(probs.device).float()]))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        # (6, N, C): dice, gated, smoothed, truth present, intersection, union
        local = torch.cat(self._val, dim=1)
        self._val.clear()
        stacked = self.all_gather(local)
        if stacked.dim() == 4:  # (world, 6, N, C) under DDP
            stacked = stacked.permute(1, 0, 2, 3).flatten(1, 2)
        dice, gated, smooth, present = stacked[0], stacked[1], stacked[2], stacked[3].bool()
        # Pooled over every pixel of the split, ungated, at the recipe's thresholds.
        inter, union = stacked[4].sum(0), stacked[5].sum(0)
        iou = inter[union > 0] / union[union > 0]
        self.log(IOU, iou.mean() if iou.numel() else torch.tensor(0.0), prog_bar=True,
                 rank_zero_only=True)
        self.log(MONITOR, dice.mean(), prog_bar=True, rank_zero_only=True)
        self.log(GATED, gated.mean(), prog_bar=True, rank_zero_only=True)
        self.log("val_dice_smoothed", smooth.mean(), rank_zero_only=True)
        if present.any():
            self.log("val_dice_defective", dice[present].mean(), rank_zero_only=True)
        for i, name in enumerate(self.recipe.model.classes):
            self.log(f"val_dice/{name}", dice[:, i].mean(), rank_zero_only=True)
        if not self.trainer.sanity_checking:
            self.validated_step = self.global_step

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["seglab_validated_step"] = self.validated_step

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.validated_step = checkpoint.get("seglab_validated_step", -1)

    def on_train_end(self) -> None:
        """Record this rank's weights digest; under DDP every rank must hold the same model."""
        flat = torch.cat([p.detach().float().flatten().cpu() for p in self.net.parameters()])
        digest = torch.tensor([flat.double().sum().item(), flat.double().square().sum().item()])
        rank = self.trainer.global_rank
        folder = Path(self.trainer.default_root_dir) / "ranks"
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / f"rank{rank}.json", json.dumps(
            {"rank": rank, "world_size": self.trainer.world_size, "sum": digest[0].item(),
             "sum_of_squares": digest[1].item()}))
        if self.trainer.world_size > 1:
            gathered = self.all_gather(digest.to(self.device)).cpu()
            if not torch.allclose(gathered, gathered[0:1].expand_as(gathered), rtol=1e-9):
                raise RuntimeError(f"DDP ranks hold different weights: {gathered.tolist()}")

    def configure_optimizers(self) -> Any:
        spec = self.recipe.train
        opt = torch.optim.Adam(self.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
        if spec.scheduler == "none":
            return opt
        if spec.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5,
                                                               patience=2)
            return {"optimizer": opt,
                    "lr_scheduler": {"scheduler": sched, "monitor": monitor_of(self.recipe)}}
        steps = max(int(self.trainer.estimated_stepping_batches), 4)
        if spec.scheduler == "onecycle":
            # OneCycleLR needs at least two steps in each phase (short test runs).
            pct = min(max(spec.warmup_fraction, 2.0 / steps), 0.5)
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=spec.lr, total_steps=steps, pct_start=pct)
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def init_weights(net: Any, model: str) -> None:
    """Start from a trained model's weights (a folder or zoo name): fine-tuning the zoo on
    your own data, or continuing a released model with a new schedule."""
    from seglab.models import zoo

    source, config = modelfolder.load_net(zoo.resolve(model))
    theirs = source.net.state_dict()
    ours = net.net.state_dict()
    if set(theirs) != set(ours) or any(theirs[k].shape != ours[k].shape for k in ours):
        raise RecipeError(
            f"train.init_from={model} is a {config.model.arch}/{config.model.encoder} with "
            f"{len(config.model.classes)} classes and aux_head={config.model.aux_head}; its "
            "weights do not fit the recipe's model")
    net.net.load_state_dict(theirs)
