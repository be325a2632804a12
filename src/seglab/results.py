"""Typed results: what seglab's batch, report and export functions return.

Each is a pydantic model, so fields are named, typed and visible to IDEs
(``summary.accepted``), and it is written to disk exactly as it is returned
(``to_json``). Item access (``summary["accepted"]``) also works, because these
results mirror the JSON files users already script against.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Result(BaseModel):
    """Base of every typed result: attribute and item access, JSON like the files."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in type(self).model_fields else default

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


class FileError(Result):
    """One input that could not be used, and why; the batch went on without it."""

    file: str
    error: str
