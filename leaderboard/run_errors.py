"""Why a pipeline step failed, in our code's words rather than the orchestrator's wrappers.

The CLI (which runs the pipeline) and the dashboard (which reads its run records) both show
it, so it lives below both; it reads the event's attributes and imports nothing of Dagster.
"""

from __future__ import annotations

from typing import Any

_WRAPPER_PREFIX = "dagster._core.errors"


def step_failure_message(event: Any) -> str | None:
    """What failed in a step (a Dagster event), unwrapped from Dagster's own wrapper errors;
    None if the event is not a step failure."""
    if event is None or not event.is_step_failure or not event.step_failure_data or not event.step_failure_data.error:
        return None
    err = event.step_failure_data.error
    while err.cause is not None and err.message.startswith(_WRAPPER_PREFIX):
        err = err.cause
    return f"step {event.step_key}: {err.message.strip()}"
