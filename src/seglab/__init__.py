"""seglab: U-Net segmentation for steel defects and jewellery background removal."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "build_model", "load_model", "load_recipe"]


def __getattr__(name: str):
    # Lazy imports keep `import seglab` (and `seglab --help`) fast: torch loads on first use.
    if name == "load_model":
        from seglab.predict import load_model

        return load_model
    if name == "build_model":
        from seglab.models import build

        return build
    if name == "load_recipe":
        from seglab.recipes import load_recipe

        return load_recipe
    raise AttributeError(f"module 'seglab' has no attribute {name!r}")
