"""Route guards: who may call a protected route, decided before its parameters are parsed.

The token is verified once per request and the `Caller` kept in the connection's scope (the
`user` slot Litestar reserves for authentication); the `caller` dependency hands it to handlers.
Guards are coroutines: Litestar runs a sync guard in a worker thread.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import SecurityRequirement, SecurityScheme

from api.auth import Caller, authenticate

Connection = ASGIConnection[Any, Any, Any, Any]

SCHEME_NAME = "BearerToken"
BEARER_SCHEME = SecurityScheme(
    type="http",
    scheme="bearer",
    bearer_format="JWT",
    description="HS256 JWT: `sub` the user id, `roles` may list admin",
)
BEARER: SecurityRequirement = {SCHEME_NAME: []}
"""What the OpenAPI schema says every guarded route requires."""


def verified_caller(connection: Connection) -> Caller:
    """The request's caller, its token verified on first use: a guard and the `caller`
    dependency share one decode, and a dependency never sees an unverified caller."""
    caller = connection.scope.get("user")
    if isinstance(caller, Caller):
        return caller
    caller = authenticate(connection, connection.app.state.settings)
    connection.scope["user"] = caller
    return caller


async def requires_token(connection: Connection, _: BaseRouteHandler) -> None:
    """401 (`WWW-Authenticate: Bearer`) without a valid bearer token."""
    verified_caller(connection)


async def requires_admin(connection: Connection, _: BaseRouteHandler) -> None:
    """401 without a valid token, 403 when its roles lack `admin`."""
    if not verified_caller(connection).is_admin:
        raise PermissionDeniedException("admin role required")


async def requires_self_or_admin(connection: Connection, _: BaseRouteHandler) -> None:
    """403 unless the caller is the `user_id` of the path, or an admin."""
    caller = verified_caller(connection)
    if caller.sub != connection.path_params["user_id"] and not caller.is_admin:
        raise PermissionDeniedException("you may read your own entry only (or be admin)")
