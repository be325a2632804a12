"""Who may do what: users with a role, API keys for the JSON API, sign-in sessions for
the pages, all in the service's database and all stored hashed.

Roles are ordered; each includes the ones before it: ``viewer`` (read items, images,
statistics), ``operator`` (upload), ``reviewer`` (decide on items), ``admin`` (users and
keys). A session lives in the database, not in a signed cookie, so every replica
sharing the database knows it and signing out ends it everywhere.

Secrets are hashed with the standard library: API keys and session tokens are 256-bit
random values, for which one SHA-256 is enough (no dictionary to guess from);
passwords, which people choose, with scrypt (memory-hard, in ``hashlib`` through
OpenSSL), so no password-hashing dependency is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from seglab.errors import SeglabError
from seglab.serve.store import ApiKey, SignIn, Store, User

ROLES = ("viewer", "operator", "reviewer", "admin")
SESSION_COOKIE = "seglab_session"
SESSION_HOURS = 12
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AuthError(SeglabError):
    """A user or key operation that cannot be done (unknown user, bad role, ...)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone=True columns.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Identity:
    """Who is asking, and through what: an API key, a sign-in session, or open mode."""

    name: str
    role: str
    via: str
    csrf: str = ""

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT, dklen=32)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                             p=int(p), dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


class Accounts:
    """Users, keys and sessions in a :class:`Store`'s database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # users -----------------------------------------------------------------------------
    def add_user(self, name: str, role: str, password: str | None = None) -> User:
        if not _NAME.match(name):
            raise AuthError(f"user name {name[:70]!r} is not allowed: 1-64 letters, digits "
                            "and . _ @ -, starting with a letter or digit")
        _check_role(role)
        if password is not None and len(password) < 8:
            raise AuthError("a password needs at least 8 characters")
        with self.store.session() as s:
            if s.get(User, name) is not None:
                raise AuthError(f"user {name!r} exists already")
            user = User(name=name, role=role,
                        password=hash_password(password) if password else "")
            s.add(user)
            s.flush()
            return user

    def users(self) -> list[User]:
        with self.store.session() as s:
            return list(s.scalars(select(User).order_by(User.name)))

    def set_role(self, name: str, role: str) -> None:
        _check_role(role)
        with self.store.session() as s:
            self._user(s, name).role = role

    def set_password(self, name: str, password: str) -> None:
        if len(password) < 8:
            raise AuthError("a password needs at least 8 characters")
        with self.store.session() as s:
            self._user(s, name).password = hash_password(password)

    def disable(self, name: str) -> None:
        """Disable a user: their keys and sessions stop working at once."""
        with self.store.session() as s:
            self._user(s, name).disabled = True

    @staticmethod
    def _user(s: Session, name: str) -> User:
        user = s.get(User, name)
        if user is None:
            raise AuthError(f"no user {name!r} (seglab users list shows them)")
        return user

    # keys ------------------------------------------------------------------------------
    def create_key(self, user: str) -> tuple[str, str]:
        """A new key for ``user``: ``(id, key)``; the key is shown once, only its hash kept."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self.store.session() as s:
            self._user(s, user)
            s.add(ApiKey(id=key_id, user=user, digest=_sha(secret)))
        return key_id, f"sk_{key_id}_{secret}"

    def api_keys(self) -> list[ApiKey]:
        with self.store.session() as s:
            return list(s.scalars(select(ApiKey).order_by(ApiKey.created)))

    def revoke(self, key_id: str) -> None:
        with self.store.session() as s:
            key = s.get(ApiKey, key_id.removeprefix("sk_").split("_")[0])
            if key is None:
                raise AuthError(f"no key {key_id[:40]!r} (seglab keys list shows them)")
            key.revoked = key.revoked or _now()

    def by_key(self, presented: str) -> Identity | None:
        parts = presented.strip().split("_", 2)
        if len(parts) != 3 or parts[0] != "sk":
            return None
        with self.store.session() as s:
            key = s.get(ApiKey, parts[1][:16])
            if key is None or key.revoked is not None or not hmac.compare_digest(
                    key.digest, _sha(parts[2])):
                return None
            user = s.get(User, key.user)
            if user is None or user.disabled:
                return None
            # At most one write a minute per key, not one per request on the hot path.
            if key.last_used is None or _now() - _aware(key.last_used) > timedelta(minutes=1):
                key.last_used = _now()
            return Identity(user.name, user.role, "key")

    # sessions --------------------------------------------------------------------------
    def sign_in(self, name: str, password: str) -> str | None:
        """A new session token for a right name and password, else ``None``."""
        with self.store.session() as s:
            user = s.get(User, name[:64])
            # Hash even for an unknown user, so timing does not tell which names exist.
            ok = check_password(password, user.password if user and user.password
                                else hash_password("-"))
            if user is None or user.disabled or not user.password or not ok:
                return None
            token = secrets.token_urlsafe(32)
            s.add(SignIn(digest=_sha(token), user=user.name, csrf=secrets.token_urlsafe(24),
                         expires=_now() + timedelta(hours=SESSION_HOURS)))
            return token

    def by_session(self, token: str) -> Identity | None:
        with self.store.session() as s:
            row = s.get(SignIn, _sha(token))
            if row is None or _aware(row.expires) < _now():
                return None
            user = s.get(User, row.user)
            if user is None or user.disabled:
                return None
            return Identity(user.name, user.role, "session", row.csrf)

    def sign_out(self, token: str) -> None:
        with self.store.session() as s:
            row = s.get(SignIn, _sha(token))
            if row is not None:
                s.delete(row)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AuthError(f"role {role[:40]!r} is not one of {', '.join(ROLES)}")
