"""The error types seglab raises for user mistakes.

One base class lets the CLI and the server turn any user mistake into one clear
message (and the right exit code or HTTP status) instead of a traceback.
"""

from __future__ import annotations


def describe(problems: list[dict]) -> str:
    """pydantic's (or FastAPI's) validation errors as one line: ``loc.path: message; ...``.
    Recipes, model folders and request bodies all report invalid input this way."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                     for e in problems)


class SeglabError(ValueError):
    """Base class for every error caused by input the user gave seglab."""


class ImageReadError(SeglabError):
    """An image file could not be read: missing, empty, truncated, not an image, too big."""

    KINDS = ("missing", "empty", "not_image", "too_large", "corrupt")

    def __init__(self, source: str, reason: str, kind: str = "corrupt") -> None:
        self.source = source
        self.reason = reason
        self.kind = kind
        """One of :attr:`KINDS`: lets the server answer 404/400/415/413/422 without parsing text."""
        super().__init__(f"cannot read image {source}: {reason}")


class RLEError(SeglabError):
    """A run-length encoded mask is malformed."""

    def __init__(self, reason: str, image_id: str | None = None, row: int | None = None) -> None:
        self.reason = reason
        self.image_id = image_id
        self.row = row
        where = []
        if row is not None:
            where.append(f"row {row}")
        if image_id is not None:
            where.append(f"image {image_id}")
        prefix = f"malformed RLE ({', '.join(where)}): " if where else "malformed RLE: "
        super().__init__(prefix + reason)


class CSVFormatError(SeglabError):
    """A Severstal-style label CSV is malformed (columns, duplicates, class ids)."""


class RecipeError(SeglabError):
    """A recipe YAML file is missing or does not validate."""


class ModelFolderError(SeglabError):
    """A saved model folder is missing a file or its files do not match."""


class ExportError(SeglabError):
    """An exported model disagrees with PyTorch, or its runtime is missing."""
