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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import segmentation_models_pytorch as smp
import torch
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
from seglab.data.files import atomic_write, write_text_atomic
from seglab.infer.runtimes import NO_NATIVE_BF16, cpuinfo, native_bf16
from seglab.models import folder as modelfolder
from seglab.models.network import count_parameters
from seglab.progress import lightning_refresh_rate
from seglab.recipes import Recipe
from seglab.training.segmenter import Segmenter, monitor_of


@dataclass
class Split:
    train: SegmentationDataset
    val: SegmentationDataset
    val_ids: list[str]


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
                           mode="max", save_last=False, enable_version_counter=False)
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
    precision = train_precision(recipe.train.precision, accelerator)
    trainer = L.Trainer(
        default_root_dir=out, max_epochs=recipe.train.epochs, max_steps=recipe.train.max_steps,
        max_time={"minutes": recipe.train.max_minutes} if recipe.train.max_minutes else None,
        precision=precision, accelerator=accelerator, devices=devices,
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
        adopt_final(trainer, ckpt, module, *final, last)
        best, best_score = final
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
        "precision": precision, "devices": str(devices), "num_nodes": num_nodes,
        "recipe_train": recipe.train.model_dump(mode="json"),
        "recipe_data": recipe.data.model_dump(mode="json"),
    }
    return modelfolder.save(out / "model", module.net.cpu(), config)


def train_precision(asked: str, accelerator: str = "auto") -> str:
    """The precision training runs in: the recipe's, except bf16 on a CPU without bf16 in
    hardware, which trains in fp32 and says so. There PyTorch emulates bf16 (a ResNet50
    U-Net's forward pass took 107x as long as fp32 on an AVX2-only AMD EPYC): a recipe
    written on a CPU with AVX512_BF16 or AMX would otherwise run for weeks, not hours."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if asked.startswith("bf16") and on_cpu and not native_bf16():
        print(f"seglab train: precision {asked} asked, training in fp32 (32): {NO_NATIVE_BF16}",
              file=sys.stderr, flush=True)
        return "32"
    return asked


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
    keep, score = trainer.strategy.broadcast((keep, score), src=0)
    if not keep:
        return None
    path = (out / "checkpoints" / "final.ckpt").resolve()
    trainer.save_checkpoint(path)
    return str(path), score


def adopt_final(trainer: L.Trainer, ckpt: ModelCheckpoint, module: Segmenter, path: str,
                score: float, last: Path) -> None:
    """Make the kept final weights the best checkpoint, in the callback and in ``last.ckpt``,
    so a resumed run that trains on compares its validations with them. Only the callback
    state in ``last.ckpt`` changes (it may hold the end of an earlier epoch, when
    ``max_minutes`` stopped mid-epoch: a resume must start there); the beaten ``best.ckpt``
    goes, so that Lightning's next best is written under that name again."""
    beaten = ckpt.best_model_path
    ckpt.best_model_path, ckpt.best_model_score = path, torch.tensor(score)
    ckpt.best_k_models = {path: ckpt.best_model_score}
    ckpt.kth_best_model_path, ckpt.kth_value = path, ckpt.best_model_score
    if trainer.is_global_zero:
        if beaten and beaten != path and Path(beaten).exists():
            Path(beaten).unlink()
        if last.exists():  # (none when max_minutes stopped the first epoch: no resume point)
            state = torch.load(last, map_location="cpu", weights_only=False)
            state["callbacks"][ckpt.state_key] = ckpt.state_dict()
            if state.get("global_step") == trainer.global_step:
                state["seglab_validated_step"] = module.validated_step
            with atomic_write(last) as fh:
                torch.save(state, fh)
    trainer.strategy.barrier()


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
    cpu = cpuinfo().get("model name") or platform.processor() or platform.machine()
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
