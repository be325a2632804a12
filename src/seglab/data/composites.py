"""Training data made on the fly: a dataset of synthetic cut-out composites (a new
seeded set every epoch) and the split that holds back a share of the real cut-outs,
by relative path, so validation never sees a piece the model trained on.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seglab.data import cutouts
from seglab.data.datasets import Item, SegmentationDataset
from seglab.errors import SeglabError
from seglab.recipes import DataSpec

if TYPE_CHECKING:
    from seglab.data import synth as synthesis



class SyntheticDataset(SegmentationDataset):
    """Composites drawn on the fly: unlimited variety for training, fixed for validation.

    Item ``i`` of epoch ``e`` is composite ``e * len + i`` of the synthesizer's
    seeded stream, so every epoch sees new composites and a run is reproducible.
    (The trainer calls :meth:`set_epoch` before each epoch and starts its loader
    workers anew each epoch, so worker processes see the epoch too.)
    """

    def __init__(self, synth: synthesis.Synthesizer, length: int, spec: DataSpec | None = None,
                 train: bool = False) -> None:
        items = [Item(Path(f"synthetic-{synth.seed}-{i:06d}.png"), None, (0,))
                 for i in range(length)]
        super().__init__(items, ["foreground"], spec, train)
        self.synth = synth
        self.epoch = 0
        self.fresh = train

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        stream_index = self.epoch * len(self.items) + index if self.fresh else index
        comp = self.synth(stream_index)
        return comp.image, comp.mask[..., None]


def synthetic_split(spec: DataSpec, root: str | os.PathLike[str]
                    ) -> tuple[SyntheticDataset, SyntheticDataset]:
    """Train and validation composites over ``root``; validation uses held-back cut-outs."""
    from seglab.data import synth as synthesis
    from seglab.data.backgrounds import list_photos

    if spec.synth is None:
        raise SeglabError("format: synthetic needs a data.synth section in the recipe")
    s = spec.synth
    root = Path(root)
    fg_dir = root / s.foregrounds
    if not fg_dir.is_dir():
        raise SeglabError(f"no foreground folder {fg_dir} (data.synth.foregrounds)")
    fgs, skipped = cutouts.load_foregrounds(fg_dir, s)
    for reason in skipped:
        print(f"skipped foreground: {reason}")
    if len(fgs) < 2:
        raise SeglabError(f"{fg_dir} has {len(fgs)} usable cut-out; 2 or more are needed to "
                          "hold some back for validation")
    order = np.random.default_rng(spec.seed).permutation(len(fgs))
    n_val = max(1, round(spec.val_fraction * len(fgs)))
    gone = cutouts.excluded(fgs, s.exclude, fg_dir)  # after the split: the rest keep their side
    val_fgs = [fgs[i] for i in order[:n_val] if fgs[i].name not in gone]
    train_fgs = [fgs[i] for i in order[n_val:] if fgs[i].name not in gone]
    if not val_fgs or not train_fgs:
        raise SeglabError(f"data.synth.exclude leaves no cut-out for "
                          f"{'validation' if not val_fgs else 'training'} in {fg_dir}")
    photos = {k: list_photos([root / sub]) if (root / sub).is_dir() else []
              for k, sub in (("rooms", s.rooms), ("hands", s.hands))}
    train = synthesis.Synthesizer(s, train_fgs, photos["rooms"], photos["hands"],
                                  seed=spec.seed if s.stream_seed is None else s.stream_seed)
    val = synthesis.Synthesizer(s, val_fgs, photos["rooms"], photos["hands"],
                                seed=spec.seed + 1)
    return (SyntheticDataset(train, s.samples_per_epoch, spec, train=True),
            SyntheticDataset(val, s.val_samples, spec, train=False))

