"""The landing contract: where the Kafka Connect sink puts files, which landed record is an
event, and how one local day of them is read, checked and deduplicated.

It is core (no Dagster): the pipelines, the landing sensor and the dashboard all read the
same layout and rules. One concern per module: `layout`, `lines`, `contract`, `sources`,
`read`, `dedupe`.
"""

from leaderboard.landing.contract import CLEAN_SCHEMA, QUARANTINE_SCHEMA
from leaderboard.landing.dedupe import Deduped, dedupe
from leaderboard.landing.layout import FILE_NAME, LandedFile, LandingError, hour_folder, hour_rel, list_files
from leaderboard.landing.read import DayRead, read_day

__all__ = [
    "CLEAN_SCHEMA",
    "FILE_NAME",
    "QUARANTINE_SCHEMA",
    "DayRead",
    "Deduped",
    "LandedFile",
    "LandingError",
    "dedupe",
    "hour_folder",
    "hour_rel",
    "list_files",
    "read_day",
]
