"""Where the service keeps item images: a local folder (the default, or a shared
filesystem mounted on every replica) or any object store fsspec knows
(``s3://bucket/prefix``, ``gs://``, ``az://`` ... with that store's driver installed).

Names are seglab's own: ``<root>/<item id>/<kind>.png``, with the id checked as 32 hex
digits and the kind against :data:`FILE_KINDS`, so nothing a client sends becomes a path.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from seglab.data.files import write_bytes_atomic
from seglab.errors import SeglabError

FILE_KINDS = ("original", "overlay", "cutout", "shown", "mask")
"""The only file names an item folder can hold (``<kind>.png``)."""


class ItemFiles:
    """Item images under one root: a folder path or an fsspec URL shared by every replica."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        text = str(root)
        try:
            self.fs, path = fsspec.core.url_to_fs(text)
        except (ImportError, ValueError) as exc:  # e.g. s3:// without s3fs installed
            raise SeglabError(f"cannot open the item store {text}: {exc}") from exc
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = str(Path(path).resolve()) if self.local else path.rstrip("/")
        self.url = self.root if self.local else text
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def path(self, item_id: str, kind: str) -> str:
        """The file's path inside the store; ``KeyError`` for any name seglab never writes."""
        if len(item_id) != 32 or not all(c in "0123456789abcdef" for c in item_id):
            raise KeyError(item_id)
        if kind not in FILE_KINDS:
            raise KeyError(kind)
        return f"{self.root}/{item_id}/{kind}.png"

    def local_path(self, item_id: str, kind: str) -> Path | None:
        """The file on this machine's disk (served without copying), or ``None`` in an
        object store."""
        return Path(self.path(item_id, kind)) if self.local else None

    def write(self, item_id: str, kind: str, data: bytes) -> None:
        """Whole or not at all: a temporary file renamed into place on a filesystem; an
        object store's single PUT is atomic by itself."""
        path = self.path(item_id, kind)
        if self.local:
            write_bytes_atomic(path, data)
        else:
            self.fs.pipe_file(path, data)

    def read(self, item_id: str, kind: str) -> bytes:
        """The file's bytes; ``KeyError`` when the item has no such file."""
        try:
            return self.fs.cat_file(self.path(item_id, kind))
        except FileNotFoundError:
            raise KeyError(f"{item_id}/{kind}") from None

    def exists(self, item_id: str, kind: str) -> bool:
        return bool(self.fs.exists(self.path(item_id, kind)))

    def remove(self, item_id: str) -> None:
        """Every file of an item (after a failed insert: a row never points at nothing, and
        no files are left without a row)."""
        folder = f"{self.root}/{self.path(item_id, 'original').split('/')[-2]}"
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(folder, recursive=True)
