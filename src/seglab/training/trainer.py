"""Training with PyTorch Lightning: one trainer for defects and cut-outs.

``train(recipe, data, out)`` fits the recipe's model, keeps the checkpoint with
the best validation mean Dice, and saves a model folder (``out/model``). The
run folder holds ``checkpoints/`` (``last.ckpt`` for ``--resume``, ``best.ckpt``, and
``final.ckpt`` when the weights training ended with were validated only after it and
won; that validation is logged one epoch past the last), CSV and TensorBoard logs and
``split.json`` (which images validated).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

from seglab.data.composites import synthetic_split
from seglab.data.datasets import (
    SegmentationDataset,
    open_dataset,
    sample_weights,
    stratified_split,
)
from seglab.data.files import write_text_atomic
from seglab.errors import RecipeError
from seglab.infer.postprocess import per_class
from seglab.metrics import dice_pairs, overlap_counts
from seglab.models import folder as modelfolder
from seglab.models.network import build, count_parameters
from seglab.progress import lightning_refresh_rate
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
            parts["bce"] = spec.bce * F.binary_cross_entropy_with_logits(
                logits.float(), mask, pos_weight=self.pos_weight)
        if self.dice_loss is not None:
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


@dataclass
class Split:
    train: SegmentationDataset
    val: SegmentationDataset
    val_ids: list[str]


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


def split_dataset(recipe: Recipe, data: str | os.PathLike[str]) -> Split:
    """The recipe's dataset over ``data``, split by class set with the recipe's seed."""
    if recipe.data.format == "synthetic":
        train_set, val_set = synthetic_split(recipe.data, data)
        return Split(train_set, val_set, [it.id for it in val_set.items])
    full = open_dataset(recipe, data)
    train_idx, val_idx = stratified_split([it.classes for it in full.items],
                                          recipe.data.val_fraction, recipe.data.seed)
    val = full.subset(val_idx, train=False)
    return Split(full.subset(train_idx, train=True), val, [it.id for it in val.items])


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffled (or weighted) order that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` at every epoch, so a run resumed after a kill
    draws exactly the batches the uninterrupted run would have drawn.
    """

    def __init__(self, size: int, seed: int, weights: np.ndarray | None = None) -> None:
        self.size = size
        self.seed = seed
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is None:
            return iter(torch.randperm(self.size, generator=gen).tolist())
        return iter(torch.multinomial(self.weights, self.size, replacement=True,
                                      generator=gen).tolist())


def make_loaders(recipe: Recipe, train_set: Dataset, val_set: Dataset,
                 train_weights: np.ndarray | None) -> tuple[DataLoader, DataLoader]:
    spec = recipe.train
    weighted = train_weights is not None and not np.allclose(train_weights, train_weights[0])
    sampler = EpochSampler(len(train_set), spec.seed, train_weights if weighted else None)
    workers = spec.num_workers
    # Data drawn afresh each epoch (on-the-fly composites) needs its workers started anew
    # every epoch, after the trainer has told the dataset the epoch; others keep theirs.
    fresh = hasattr(train_set, "set_epoch")
    train_loader = DataLoader(train_set, batch_size=spec.batch_size, sampler=sampler,
                              drop_last=len(train_set) > spec.batch_size, num_workers=workers,
                              persistent_workers=workers > 0 and not fresh)
    val_loader = DataLoader(val_set, batch_size=spec.batch_size, shuffle=False,
                            num_workers=workers, persistent_workers=workers > 0)
    return train_loader, val_loader


def train(recipe: Recipe, data: str | os.PathLike[str], out: str | os.PathLike[str], *,
          resume: bool = False, devices: int | str = 1, num_nodes: int = 1,
          accelerator: str = "auto", strategy: str = "auto", progress: bool = True,
          split: Split | None = None) -> Path:
    """Fit ``recipe`` on ``data``; returns the saved model folder ``out/model``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _quiet_lightning()
    L.seed_everything(recipe.train.seed, workers=True, verbose=False)
    split = split or split_dataset(recipe, data)
    weights = sample_weights(split.train, recipe.data.defect_oversample)
    train_loader, val_loader = make_loaders(recipe, split.train, split.val, weights)
    write_text_atomic(out / "split.json", json.dumps(
        {"train": [it.id for it in split.train.items], "val": split.val_ids}, indent=1))
    write_text_atomic(out / "recipe.json", recipe.model_dump_json(indent=2))
    monitor = monitor_of(recipe)
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor=monitor,
                           mode="max", save_last=False)
    # The latest state, every epoch, for --resume (save_last only fires when "best" improves;
    # without save_on_train_epoch_end Lightning saves it only after a validation, so with
    # val_every_n_epochs: 2 a kill lost up to two epochs).
    latest = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", monitor=None,
                             save_top_k=1, every_n_epochs=1, enable_version_counter=False,
                             save_on_train_epoch_end=True)
    callbacks: list = [ckpt, latest]
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=lightning_refresh_rate(len(train_loader))))
    if recipe.train.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor, mode="max",
                                       patience=recipe.train.early_stopping_patience,
                                       check_on_train_epoch_end=False))
    if strategy == "ddp" and recipe.model.encoder_depth < 5:
        # smp keeps the encoder's deeper stages even when encoder_depth < 5; DDP must
        # be told that those parameters get no gradient.
        strategy = "ddp_find_unused_parameters_true"
    trainer = L.Trainer(
        default_root_dir=out, max_epochs=recipe.train.epochs, max_steps=recipe.train.max_steps,
        max_time={"minutes": recipe.train.max_minutes} if recipe.train.max_minutes else None,
        precision=recipe.train.precision, accelerator=accelerator, devices=devices,
        num_nodes=num_nodes, strategy=strategy, callbacks=callbacks,
        logger=[CSVLogger(out, name="logs", version="", flush_logs_every_n_steps=10),
                TensorBoardLogger(out, name="tensorboard", version="")],
        check_val_every_n_epoch=recipe.train.val_every_n_epochs, log_every_n_steps=5,
        enable_progress_bar=progress, enable_model_summary=False, deterministic=False,
    )
    module = Segmenter(recipe)
    last = out / "checkpoints" / "last.ckpt"
    started = time.time()
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume and last.exists()
                else None)
    best, best_score = ckpt.best_model_path, ckpt.best_model_score
    final = validate_final(trainer, module, val_loader, monitor,
                           None if best_score is None else float(best_score), out)
    if final is not None:
        best, best_score = final
        # The best-checkpoint callback adopts it, and the latest state records that, so a
        # resumed run that trains on compares its validations with these weights.
        ckpt.best_model_path, ckpt.best_model_score = best, torch.tensor(best_score)
        ckpt.best_k_models = {best: ckpt.best_model_score}
        ckpt.kth_best_model_path, ckpt.kth_value = best, ckpt.best_model_score
        trainer.save_checkpoint(last)
    elif (out / "checkpoints" / "final.ckpt").exists() and trainer.is_global_zero and (
            Path(ckpt.best_model_path or ".").name != "final.ckpt"):
        (out / "checkpoints" / "final.ckpt").unlink()  # an earlier run's, beaten since
    if not trainer.is_global_zero:
        return out / "model"
    best = best or (str(last) if last.exists() else "")
    if best:
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    config = modelfolder.ModelConfig.from_recipe(recipe)
    config.training = {
        "data": str(Path(data).resolve()),
        "train_images": len(split.train), "val_images": len(split.val),
        "epochs_run": trainer.current_epoch, "steps": trainer.global_step,
        "best_checkpoint_metric": monitor,
        "best_checkpoint_score": _scalar(best_score),
        "best_checkpoint": Path(best).name if best else None,
        "seconds": round(time.time() - started, 1), "resumed": bool(resume and last.exists()),
        "parameters": count_parameters(module.net),
        "hardware": hardware(), "software": software(),
        "precision": recipe.train.precision, "devices": str(devices), "num_nodes": num_nodes,
        "recipe_train": recipe.train.model_dump(mode="json"),
        "recipe_data": recipe.data.model_dump(mode="json"),
    }
    return modelfolder.save(out / "model", module.net.cpu(), config)


def validate_final(trainer: L.Trainer, module: Segmenter, val_loader: DataLoader, monitor: str,
                   best_score: float | None, out: Path) -> tuple[str, float] | None:
    """Validate the weights training ended with when no validation saw them (``epochs`` not a
    multiple of ``val_every_n_epochs``, or stopped by ``max_minutes``); they are usually the
    best, at the schedule's lowest rate. Returns ``(checkpoint, score)`` when they beat the
    best checkpoint (saved as ``checkpoints/final.ckpt``), else ``None``."""
    if module.validated_step == trainer.global_step or trainer.global_step == 0:
        return None
    metrics = trainer.validate(module, val_loader, verbose=False)
    score = float(metrics[0][monitor]) if metrics and monitor in metrics[0] else None
    keep = score is not None and math.isfinite(score) and (best_score is None
                                                           or score > best_score)
    # Every rank computed the score from the same gathered data; rank 0 decides for all.
    if not trainer.strategy.broadcast(keep, src=0):
        return None
    path = out / "checkpoints" / "final.ckpt"
    trainer.save_checkpoint(path)
    return str(path), score


def _quiet_lightning() -> None:
    """Drop what Lightning prints on every run that tells a user nothing: "GPU available:
    False", product tips, and a deprecation inside Lightning itself (the card records the
    hardware; warnings about the user's own data still show)."""
    import logging
    import warnings

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _scalar(value: Any) -> float | None:
    return None if value is None else round(float(value), 5)


def hardware() -> dict[str, Any]:
    """What the run actually ran on, for the model card."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cpu_threads": torch.get_num_threads(),
                            "logical_cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def software() -> dict[str, str]:
    import albumentations
    import timm

    from seglab import __version__

    return {"seglab": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "lightning": L.__version__,
            "segmentation_models_pytorch": smp.__version__, "timm": timm.__version__,
            "albumentations": albumentations.__version__, "os": platform.platform()}
