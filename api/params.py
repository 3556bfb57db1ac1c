"""Request parameters shared by the controllers."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Litestar, Request
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.routes import HTTPRoute

from leaderboard.boards import ALL_PERIOD_TYPES, SEASON
from leaderboard.periods import PeriodError, parse_date, parse_when

# The deepest page a client may ask for. A page costs the same at any offset (a rank range), but
# an unbounded offset would invite walking a million-user period page by page; past this, 400.
MAX_OFFSET = 100_000
T = TypeVar("T")

# Checked by the handlers (an unknown value is a 400 saying what exists); declared here so the
# schema lists the values a client may send.
PeriodType = Annotated[str, Parameter(schema_extra={"enum": list(ALL_PERIOD_TYPES)})]
Limit = Annotated[int | None, Parameter(ge=1, le=100, description="Default: the board's display limit")]
Offset = Annotated[int, Parameter(ge=0, le=MAX_OFFSET, description=f"Entries skipped, at most {MAX_OFFSET}")]
# A season takes a date-time too (beyond the documented format, which every period takes).
AT_HELP = (
    "A local date inside the period (YYYY-MM-DD); for a season also a date-time "
    "(2026-03-29T12:00 local, or with an offset): the season containing it"
)
At = Annotated[str | None, Parameter(description=AT_HELP, schema_extra={"format": "date"})]
RequiredAt = Annotated[str, Parameter(description=AT_HELP, schema_extra={"format": "date"})]


def local_date(value: str | None, period: str | None = None) -> dt.date | dt.datetime | None:
    """`?at=` as a date (for a season also an instant), or 400 saying what it looks like."""
    if value is None:
        return None
    try:
        return parse_when(value) if period == SEASON else parse_date(value)
    except PeriodError as exc:
        raise ProblemDetailsException(status_code=400, detail=f"at={exc}") from None


def query_names(app: Litestar) -> dict[HTTPRouteHandler, frozenset[str]]:
    """The query parameters each handler declares, read once from Litestar's routes."""
    return {
        handler: frozenset(p.field_alias for p in model.expected_query_params)
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler, model in route.route_handler_map.values()
    }


async def reject_unknown_query(request: Request[Any, Any, Any]) -> None:
    """400 naming a query parameter the route does not take: a typo (`?limt=5`) would
    otherwise be ignored and answer something the client did not ask for."""
    if not request.scope["query_string"]:
        return
    allowed = request.app.state.query_names.get(request.route_handler)
    if allowed is None:
        return
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "none"
        raise ProblemDetailsException(
            status_code=400, detail=f"unknown query parameter {', '.join(unknown)}; this route takes: {takes}"
        )


def _integral(value: Any) -> Any:
    """JSON's integers as JSON Schema counts them: `714.0` is one."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


async def strict_body(request: Request[Any, Any, Any], struct: type[T]) -> T:
    """The JSON body as its declared type, strictly: Litestar converts bodies laxly (`"true"` to
    `True`, `"5"` to `5`), accepting what the schema says is wrong."""
    try:
        return msgspec.convert(_integral(msgspec.json.decode(await request.body())), struct, strict=True)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProblemDetailsException(status_code=400, detail=f"request body: {exc}") from None
