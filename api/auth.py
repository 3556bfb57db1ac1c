"""Bearer JWT (DESIGN §7): HS256 with JWT_SECRET, `sub` the user id, `roles` with `admin`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import jwt
from litestar import Request
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from leaderboard.settings import Settings


@dataclass(frozen=True)
class Caller:
    sub: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def mint(settings: Settings, sub: str, admin: bool = False, ttl_seconds: int | None = None) -> str:
    if not settings.JWT_SECRET:
        raise ValueError("JWT_SECRET is not set")
    now = dt.datetime.now(dt.UTC)
    claims: dict = {
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


def authenticate(request: Request, settings: Settings) -> Caller:
    """The caller of a request, or 401: no token, another algorithm (`none` included), a wrong
    key, expired or not yet valid, no `exp`, or a wrong issuer/audience when configured."""
    header = request.headers.get("authorization", "")
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
        raise NotAuthorizedException("invalid token: sub must be a string and roles a list")
    return Caller(claims["sub"], frozenset(str(r) for r in roles))


def require_self_or_admin(caller: Caller, user_id: str) -> None:
    if caller.sub != user_id and not caller.is_admin:
        raise PermissionDeniedException("you may read your own entry only (or be admin)")
