"""seglab: U-Net segmentation for steel defects and jewellery background removal.

    import seglab
    cut = seglab.remove("photo.jpg")                 # the zoo's jewellery-cutout model
    predictor = seglab.load_model("steel-defects")   # a zoo name or a model folder
    seglab.list_models()                             # the zoo's ready models
    folder = seglab.fit("cpu-demo", "data/", "runs/demo")  # train, tune, document
    seglab.export(folder)                            # ONNX / OpenVINO / int8, checked

The sub-packages name the architecture (``docs/ARCHITECTURE.md``): ``data`` (read and
write), ``models`` (networks, model folders, zoo), ``infer`` (predictor, runtimes,
post-processing, gate), ``defects`` and ``cutout`` (the two uses), ``training``,
``deploy`` (export) and ``serve`` (web service).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "Cutout",
    "CutoutSummary",
    "ExportRecord",
    "FitResult",
    "GateReport",
    "PredictSummary",
    "Prediction",
    "Predictor",
    "__version__",
    "build_model",
    "export",
    "fit",
    "list_models",
    "load_model",
    "load_recipe",
    "read_image",
    "remove",
]

if TYPE_CHECKING:  # what the lazy names below resolve to, for IDEs and type checkers
    from seglab.cutout.batch import CutoutSummary, GateReport
    from seglab.cutout.remove import Cutout, remove
    from seglab.data.images import read_image
    from seglab.defects.batch import PredictSummary
    from seglab.deploy.verify import ExportRecord, export
    from seglab.infer.predictor import Prediction, Predictor, load_model
    from seglab.models.network import build as build_model
    from seglab.models.zoo import names as list_models
    from seglab.recipes import load_recipe
    from seglab.training.run import FitResult, fit

_LAZY = {"load_model": ("seglab.infer.predictor", "load_model"),
         "Predictor": ("seglab.infer.predictor", "Predictor"),
         "Prediction": ("seglab.infer.predictor", "Prediction"),
         "build_model": ("seglab.models.network", "build"),
         "load_recipe": ("seglab.recipes", "load_recipe"),
         "remove": ("seglab.cutout.remove", "remove"),
         "Cutout": ("seglab.cutout.remove", "Cutout"),
         "read_image": ("seglab.data.images", "read_image"),
         "list_models": ("seglab.models.zoo", "names"),
         "fit": ("seglab.training.run", "fit"),
         "export": ("seglab.deploy.verify", "export"),
         # typed results, for annotations and isinstance checks
         "PredictSummary": ("seglab.defects.batch", "PredictSummary"),
         "CutoutSummary": ("seglab.cutout.batch", "CutoutSummary"),
         "GateReport": ("seglab.cutout.batch", "GateReport"),
         "ExportRecord": ("seglab.deploy.verify", "ExportRecord"),
         "FitResult": ("seglab.training.run", "FitResult")}


def __getattr__(name: str) -> object:
    # Lazy imports keep `import seglab` (and `seglab --help`) fast: torch loads on first use.
    if name in _LAZY:
        from importlib import import_module

        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'seglab' has no attribute {name!r}")
