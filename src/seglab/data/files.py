"""Every output written atomically (a kill never leaves half a file), JSON lines
for resumable batch jobs, and distinct output names when inputs share a file name.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydantic import BaseModel


def output_names(paths: Sequence[Path]) -> dict[Path, str]:
    """A distinct output name (no suffix) for each input path of one run.

    The file's stem when no other input shares it; otherwise the shortest tail of
    its path that is unique, folders joined by ``__`` (``shop-a__1`` and
    ``shop-b__1`` for two ``1.png``), so two photos never overwrite each other's
    outputs. Depends only on the run's full input list, so a resumed run agrees.
    """
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    out: dict[Path, str] = {}
    clashing = [p for p in paths if stems[p.stem] > 1]
    for p in paths:
        if stems[p.stem] == 1:
            out[p] = p.stem
    depth = 2
    while clashing:
        tails: dict[str, list[Path]] = {}
        for p in clashing:
            parts = p.with_suffix("").parts[-depth:]
            tails.setdefault("__".join(parts), []).append(p)
        clashing = []
        for tail, group in tails.items():
            if len(group) == 1 or depth > max(len(p.parts) for p in group):
                for i, p in enumerate(group):  # identical paths cannot occur; be safe anyway
                    out[p] = tail if len(group) == 1 else f"{tail}__{i}"
            else:
                clashing += group
        depth += 1
    return out


class JsonLines:
    """Append-only per-item results, one JSON object per line, for resumable batch jobs.

    Each batch is flushed and fsynced; a line cut short by a kill is ignored on
    reading, so ``done()`` lists exactly the items whose outputs were all written
    (outputs are written before their line).
    """

    def __init__(self, path: str | os.PathLike[str], resume: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            self._drop_torn_tail()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _drop_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data[:data.rfind(b"\n") + 1]
            with atomic_write(self.path) as f:
                f.write(keep)

    def pending(self, paths: Iterable[Path]) -> list[Path]:
        """The paths not yet recorded as done (all of them on a fresh run)."""
        done = {row["path"] for row in self.rows()}
        return [p for p in paths if str(p) not in done]

    def rows(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue

    def append(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    A kill mid-write leaves at most a ``.tmp`` file, never a half-written file
    under the final name.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)



def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):  # typed results, as their JSON files
        return value.model_dump(mode="json")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")
