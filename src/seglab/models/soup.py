"""One model from several: the mean of their weights (a "model soup", Wortsman et al. 2022).

Models fine-tuned from the same weights stay in one basin of the loss, so the mean of
their weights is itself a model, and often a better one than each: v6 of
``jewellery-cutout`` and six seventh-stage tries from it, each a wash or worse against v6
on its own, averaged to +0.003 held-out IoU (v7; README). timm's ``avg_checkpoints.py``
averages checkpoints of one run by file name; nothing averages seglab's model folders and
zoo names, so this is done by hand.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from seglab.errors import ModelFolderError
from seglab.models import folder as modelfolder
from seglab.models import zoo


def soup(models: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Average the weights of ``models`` (folders or zoo names) into the folder ``out``.

    They must share the architecture, encoder, classes and task (the decoder's
    up-sampling may differ: it holds no weights); the new folder takes the first
    model's config, pre- and post-processing, gate and training record (its data,
    hardware and software), lists the members under ``training.soup``, and carries no
    measured figures until it is measured. Averaging
    is done in fp32 (a released fp16 model averages without rounding twice).
    """
    if len(models) < 2:
        raise ModelFolderError(f"a soup needs two models or more, got {len(models)}")
    first_net, first = modelfolder.load_net(zoo.resolve(models[0]))
    total = {k: v.detach().float().clone() if v.is_floating_point() else v
             for k, v in first_net.net.state_dict().items()}

    def kind(config: modelfolder.ModelConfig) -> dict:
        """What must agree: the network (bar its weightless up-sampling) and its input."""
        spec = config.model.model_dump(exclude={"decoder_interpolation"})
        return {**{f"model.{k}": v for k, v in spec.items()}, "task": config.task,
                "input_size": config.input_size, "normalization": config.normalization}

    want = kind(first)
    for name in models[1:]:
        net, config = modelfolder.load_net(zoo.resolve(name))
        got = kind(config)
        if got != want:
            differ = ", ".join(f"{k} {got[k]!r} against {want[k]!r}"
                               for k in want if got[k] != want[k])
            raise ModelFolderError(f"{name} differs from {models[0]} in {differ}: only models "
                                   "of one architecture and input average")
        state = net.net.state_dict()
        for key, value in total.items():
            if value.is_floating_point():
                value += state[key].float()
    first_net.net.load_state_dict({
        k: v / len(models) if v.is_floating_point() else v for k, v in total.items()})
    config = first.model_copy(update={
        "name": None, "metrics": {},
        "training": {**first.training, "soup": [str(m) for m in models],
                     "note": "weights averaged by seglab.models.soup, not trained as such; "
                             "the other keys are the first model's training record"}})
    return modelfolder.save(out, first_net, config)
