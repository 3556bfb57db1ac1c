"""Bearer JWT: HS256 with JWT_SECRET, `sub` the user id, `roles` with `admin`.

The guards in `api.guards` call `authenticate` once per request; handlers get the `Caller` by DI.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import jwt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException

from leaderboard.settings import Settings


@dataclass(frozen=True)
class Caller:
    """Who a verified token says the caller is."""

    sub: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def mint(settings: Settings, sub: str, admin: bool = False, ttl_seconds: int | None = None) -> str:
    """A token `authenticate` accepts (the `leaderboard token` command prints one)."""
    if not settings.JWT_SECRET:
        raise ValueError("JWT_SECRET is not set")
    now = dt.datetime.now(dt.UTC)
    claims: dict[str, Any] = {
        "sub": sub,
        "roles": ["admin"] if admin else [],
        "iat": now,
        "exp": now + dt.timedelta(seconds=ttl_seconds or settings.jwt_ttl_seconds),
    }
    if settings.JWT_ISSUER:
        claims["iss"] = settings.JWT_ISSUER
    if settings.JWT_AUDIENCE:
        claims["aud"] = settings.JWT_AUDIENCE
    return jwt.encode(claims, settings.JWT_SECRET, algorithm="HS256")


def authenticate(connection: ASGIConnection[Any, Any, Any, Any], settings: Settings) -> Caller:
    """The caller of a request, or 401: no token, another algorithm (`none` included), a wrong
    key, expired or not yet valid, no `exp`, or a wrong issuer/audience when configured."""
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthorizedException("a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    if not settings.JWT_SECRET:
        raise NotAuthorizedException("authentication is not configured (JWT_SECRET)")
    try:
        claims = jwt.decode(
            token.strip(),
            settings.JWT_SECRET,
            algorithms=["HS256"],
            options={"require": ["exp", "sub"], "verify_aud": bool(settings.JWT_AUDIENCE)},
            issuer=settings.JWT_ISSUER,
            audience=settings.JWT_AUDIENCE,
        )
    except jwt.PyJWTError as exc:
        raise NotAuthorizedException(f"invalid token: {exc}", headers={"WWW-Authenticate": "Bearer"}) from None
    roles = claims.get("roles") or []
    if not isinstance(claims["sub"], str) or not isinstance(roles, list):
        raise NotAuthorizedException(
            "invalid token: sub must be a string and roles a list", headers={"WWW-Authenticate": "Bearer"}
        )
    return Caller(claims["sub"], frozenset(str(r) for r in roles))
