"""seglab: U-Net segmentation for steel defects and jewellery background removal.

    import seglab
    cut = seglab.remove("photo.jpg")                 # the zoo's jewellery-cutout model
    predictor = seglab.load_model("steel-defects")   # a zoo name or a model folder
    seglab.models()                                  # the zoo's ready models
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["__version__", "build_model", "load_model", "load_recipe", "models", "read_image",
           "remove"]

if TYPE_CHECKING:  # what the lazy names below resolve to, for IDEs and type checkers
    from seglab.cutout import remove
    from seglab.io import read_image
    from seglab.models import build as build_model
    from seglab.predict import load_model
    from seglab.recipes import load_recipe
    from seglab.zoo import names as models

_LAZY = {"load_model": ("seglab.predict", "load_model"),
         "build_model": ("seglab.models", "build"),
         "load_recipe": ("seglab.recipes", "load_recipe"),
         "remove": ("seglab.cutout", "remove"),
         "read_image": ("seglab.io", "read_image"),
         "models": ("seglab.zoo", "names")}


def __getattr__(name: str):
    # Lazy imports keep `import seglab` (and `seglab --help`) fast: torch loads on first use.
    if name in _LAZY:
        from importlib import import_module

        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'seglab' has no attribute {name!r}")
