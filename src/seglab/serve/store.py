"""Where the web service keeps what it processed: a SQL database plus a data folder.

Every processed image becomes an :class:`Item` (its verdict and full result as
JSON), every human decision a :class:`Review`. SQLAlchemy means the embedded
SQLite file is the default and PostgreSQL (shared by replicas) is one URL away.
Image files live in an :class:`~seglab.serve.files.ItemFiles` store
(``data_dir/items/<item id>/`` by default, or a shared folder or object store) with
names seglab chooses: an uploaded file name is stored as text, never used as a path.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from seglab.data.images import encode_png
from seglab.serve import schema
from seglab.serve.files import FILE_KINDS, ItemFiles

KINDS = ("defects", "cutout")
__all__ = ["FILE_KINDS", "KINDS", "Item", "Review", "Store", "database_url"]


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Item(Base):
    """One processed image: what the model said, and what a person decided."""

    __tablename__ = "items"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    batch: Mapped[str] = mapped_column(String(32), index=True)
    model: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(255))
    """The uploaded name, for display only."""
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[bool] = mapped_column(Boolean)
    """Defect check: defective. Cut-out: accepted."""
    score: Mapped[float] = mapped_column(Float)
    """Defect check: defect score. Cut-out: confidence."""
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    reviews: Mapped[list[Review]] = relationship(back_populates="item",
                                                 order_by="Review.created")

    @property
    def final(self) -> bool:
        """The verdict a person confirmed or set; the model's when nobody reviewed it."""
        return self.reviews[-1].verdict if self.reviews else self.verdict

    def as_dict(self) -> dict[str, Any]:
        last = self.reviews[-1] if self.reviews else None
        return {"id": self.id, "kind": self.kind, "batch": self.batch, "model": self.model,
                "filename": self.filename, "width": self.width, "height": self.height,
                "verdict": self.verdict, "score": self.score,
                "created": self.created.isoformat(), "result": self.result,
                "review": last.as_dict() if last else None}


class Review(Base):
    """A person's decision on an item: confirm the model, or override it."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    verdict: Mapped[bool] = mapped_column(Boolean)
    agrees: Mapped[bool] = mapped_column(Boolean)
    """True when the person confirmed the model's verdict."""
    reviewer: Mapped[str] = mapped_column(String(100), default="")
    note: Mapped[str] = mapped_column(String(1000), default="")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    item: Mapped[Item] = relationship(back_populates="reviews")

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "agrees": self.agrees, "reviewer": self.reviewer,
                "note": self.note, "created": self.created.isoformat()}


class User(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password: Mapped[str] = mapped_column(String(200), default="")
    """``scrypt$n$r$p$salt$hash`` (hex), or empty: this user signs in with keys only."""
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    """The public part of the key (``sk_<id>_<secret>``), shown in listings."""
    user: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the secret part; the secret itself is shown once and never stored."""
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    revoked: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SignIn(Base):
    __tablename__ = "sessions"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 of the cookie's token."""
    user: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def new_id() -> str:
    return uuid.uuid4().hex


def database_url(data_dir: str | os.PathLike[str], url: str | None = None) -> str:
    """The SQLAlchemy URL: ``url`` (``postgresql://`` means the psycopg 3 driver that
    ``seglab[postgres]`` installs), or the SQLite file in ``data_dir``."""
    if not url:
        return f"sqlite:///{(Path(data_dir) / 'seglab.db').resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_database_engine(url: str) -> Engine:
    """An engine for the service: SQLite tuned for concurrent requests; a server database
    with connections checked before use (a replica outlives a database restart)."""
    if url.startswith("postgresql+psycopg"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            from seglab.errors import SeglabError

            raise SeglabError("PostgreSQL needs its driver: pip install 'seglab[postgres]'"
                              ) from None
    engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Store:
    """The database and the item files behind the service."""

    def __init__(self, data_dir: str | Path, url: str | None = None, *,
                 files: str | os.PathLike[str] | None = None,
                 migrate: bool | None = None) -> None:
        """``files``: where item images go (a folder or fsspec URL; default
        ``data_dir/items``). ``migrate``: upgrade an older schema in place (default:
        only for SQLite)."""
        self.data_dir = Path(data_dir)
        if not url:  # the SQLite file lives there; a server database needs no local folder
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.url = database_url(self.data_dir, url)
        self.files = ItemFiles(files if files is not None else self.data_dir / "items")
        self.engine: Engine = create_database_engine(self.url)
        schema.prepare(self.engine, migrate=self.engine.dialect.name == "sqlite"
                       if migrate is None else migrate)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed as a whole, rolled back on any error."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def add(self, *, kind: str, batch: str, model: str, filename: str, image: np.ndarray,
            verdict: bool, score: float, result: dict[str, Any],
            files: dict[str, np.ndarray],
            commit: Callable[[], AbstractContextManager[None]] | None = None) -> Item:
        """Write the item's files (atomically), then its row: a row never points at nothing.

        ``commit`` guards the row's insert (the service's deadline and disconnect
        check): when it raises, the files written are removed and nothing is stored."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        item_id = new_id()
        encoded: dict[int, bytes] = {}  # a rejected cut-out's "shown" is the original itself
        for name, array in {"original": image, **files}.items():
            if id(array) not in encoded:
                encoded[id(array)] = encode_png(array)
            self.files.write(item_id, name, encoded[id(array)])
        item = Item(id=item_id, kind=kind, batch=batch, model=model, filename=filename[:255],
                    width=int(image.shape[1]), height=int(image.shape[0]), verdict=verdict,
                    score=float(score), result=json.loads(json.dumps(result)))
        try:
            with commit() if commit else contextlib.nullcontext(), self.session() as s:
                s.add(item)
        except BaseException:
            self.files.remove(item_id)
            raise
        return self.get(item_id)

    def get(self, item_id: str) -> Item:
        with self.session() as s:
            item = s.get(Item, item_id)
            if item is None:
                raise KeyError(item_id)
            item.reviews  # noqa: B018 - load reviews while the session is open
            return item

    def items(self, *, kind: str | None = None, batch: str | None = None,
              unreviewed: bool = False, limit: int = 200, offset: int = 0) -> list[Item]:
        query = select(Item).order_by(Item.created.desc()).limit(limit).offset(offset)
        if kind:
            query = query.where(Item.kind == kind)
        if batch:
            query = query.where(Item.batch == batch)
        if unreviewed:
            query = query.where(~Item.reviews.any())
        with self.session() as s:
            rows = list(s.scalars(query))
            for row in rows:
                row.reviews  # noqa: B018
            return rows

    def review(self, item_id: str, verdict: bool, *, reviewer: str = "", note: str = ""
               ) -> Item:
        with self.session() as s:
            item = s.get(Item, item_id)
            if item is None:
                raise KeyError(item_id)
            s.add(Review(item_id=item_id, verdict=verdict, agrees=verdict == item.verdict,
                         reviewer=reviewer[:100], note=note[:1000]))
        return self.get(item_id)

    def ping(self) -> None:
        """A cheap round trip to the database (for health checks)."""
        with self.session() as s:
            s.execute(select(1))

    def stats(self) -> dict[str, Any]:
        """Counts over everything processed, for the statistics page and ``/api/v1/stats``."""
        with self.session() as s:
            counts = {kind: s.scalar(select(func.count()).where(Item.kind == kind)) or 0
                      for kind in KINDS}
            positive = {kind: s.scalar(select(func.count()).where(
                Item.kind == kind, Item.verdict.is_(True))) or 0 for kind in KINDS}
            reviewed = s.scalar(select(func.count(func.distinct(Review.item_id)))) or 0
            overridden = s.scalar(select(func.count()).where(Review.agrees.is_(False))) or 0
            defect_rows = s.execute(select(Item.score, Item.result).where(
                Item.kind == "defects")).all()
            cut_rows = s.execute(select(Item.score, Item.result).where(
                Item.kind == "cutout")).all()
        per_class: dict[str, int] = {}
        for _, result in defect_rows:
            for name in result.get("classes_found", []):
                per_class[name] = per_class.get(name, 0) + 1
        return {
            "items": counts, "defective": positive["defects"], "accepted": positive["cutout"],
            "accepted_share": positive["cutout"] / counts["cutout"] if counts["cutout"] else None,
            "reviewed": reviewed, "overridden": overridden, "defects_per_class": per_class,
            "defect_scores": [float(score) for score, _ in defect_rows],
            "confidences": [float(score) for score, _ in cut_rows],
            "area_fractions": [float(r.get("area_fraction", 0.0)) for _, r in cut_rows],
        }


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL keeps readers and the writer from blocking each other under concurrent requests;
    # foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
