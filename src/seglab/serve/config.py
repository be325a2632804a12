"""The service's limits (``seglab serve --config FILE`` or command-line flags), validated
like recipes: an unknown key or a bad value is one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from seglab.errors import RecipeError
from seglab.recipes import Strict, load_validated, merge_overrides, validate


class ServerSpec(Strict):
    """Limits of the web service (``seglab serve --config FILE`` or command-line flags)."""

    max_upload_mb: Annotated[float, Field(gt=0, le=1024)] = 20.0
    """Requests with a larger body are refused (413) before they are read."""
    max_pixels: Annotated[int, Field(ge=1)] = 40_000_000
    """Images with more pixels are refused (413): a decompression-bomb guard."""
    max_side: Annotated[int, Field(ge=16)] = 10_000
    """Images wider or taller than this are refused (413), whatever their pixel count."""
    max_aspect: Annotated[float, Field(ge=1)] = 16.0
    """Longest side over shortest side: a 1x100000 strip costs far more than its pixels
    (a steel strip of 1600x256 is 6.25)."""
    max_model_pixels: Annotated[int, Field(ge=1)] = 4_000_000
    """A model without a fixed input size runs at the image's own size: larger images are
    refused (413) rather than run at any size that arrives."""
    request_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    """Per file: past this, its work is cancelled, nothing is stored and the reply is 504."""
    max_files: Annotated[int, Field(ge=1, le=10_000)] = 32
    """Files in one batch request."""
    max_concurrent: Annotated[int, Field(ge=1, le=256)] = 2
    """Inferences running at once; more requests wait in a queue."""
    queue_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """How long a request waits for a free inference slot before a 503."""
    formats: list[str] = Field(default_factory=lambda: ["JPEG", "PNG", "WEBP", "AVIF", "BMP",
                                                        "TIFF"])
    """Accepted image types, recognised by content (Pillow format names)."""
    auth: Literal["auto", "on", "off"] = "auto"
    """Sign-in and API keys (``seglab users``/``seglab keys``). ``auto``: on unless the
    service listens on loopback only; ``off`` (open development mode) is refused on any
    other address."""


def load_server_spec(path: str | Path | None = None, overrides: dict | None = None
                     ) -> ServerSpec:
    """The service's limits: defaults, then a YAML file, then command-line overrides."""
    if path is None:
        return validate(ServerSpec, merge_overrides(overrides or {}), "server settings")
    if not Path(path).exists():
        raise RecipeError(f"server settings file {path} not found")
    return load_validated(ServerSpec, Path(path), overrides, "server settings")
