"""The OpenAPI document: its config, and the values only known once the boards file is read."""

from __future__ import annotations

import msgspec
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, OpenAPIType, Operation, Schema

from api.guards import BEARER_SCHEME, SCHEME_NAME
from leaderboard.boards import BoardSet


def openapi_config() -> OpenAPIConfig:
    """A new config per app: Litestar fills it in as it builds the document."""
    return OpenAPIConfig(
        title="Leaderboard API",
        version="0.1.0",
        path="/schema",
        components=Components(security_schemes={SCHEME_NAME: BEARER_SCHEME}),
    )


def _operations(app: Litestar) -> list[Operation]:
    paths = app.openapi_schema.paths or {}
    return [op for item in paths.values() for op in (item.get, item.put, item.post, item.delete) if op is not None]


def forbid_unknown_fields(app: Litestar, *structs: type[msgspec.Struct]) -> None:
    """Say `additionalProperties: false` of request bodies that refuse unknown fields (Litestar's
    schema leaves it out), so the schema promises what the API enforces."""
    schemas = app.openapi_schema.components.schemas or {}
    for struct in structs:
        assert struct.__struct_config__.forbid_unknown_fields, struct
        schemas[struct.__name__].additional_properties = False


def document_boards(app: Litestar, boards: BoardSet) -> None:
    """List the board ids wherever a board is named, so the schema says which values a client
    may send: the ids come from the boards file, which the handlers' annotations cannot know."""
    ids = [b.id for b in boards.boards]
    for op in _operations(app):
        for param in op.parameters or []:
            if param.name == "board" and param.param_in == "path" and isinstance(param.schema, Schema):
                param.schema.enum = ids
    update = (app.openapi_schema.components.schemas or {}).get("ConfigUpdate")
    patches = update.properties.get("boards") if update is not None and update.properties else None
    if isinstance(patches, Schema) and patches.additional_properties is not None:
        # one property per board and no others: a map keyed by "any string" would invite the rest
        patch = patches.additional_properties
        patches.properties = dict.fromkeys(ids, patch)  # type: ignore[arg-type]
        patches.additional_properties = False
    exclusion = (app.openapi_schema.components.schemas or {}).get("ExclusionRequest")
    board = exclusion.properties.get("board") if exclusion is not None and exclusion.properties else None
    for option in (board.one_of or []) if isinstance(board, Schema) else []:
        if isinstance(option, Schema) and option.type == OpenAPIType.STRING:
            option.enum = ids  # or null: every board
