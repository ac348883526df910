"""Imports every table module so that the shared metadata knows all tables."""

import backburner.auth.tables
import backburner.batches.tables
import backburner.db.tables
import backburner.files.blobs.tables
import backburner.files.tables
import backburner.leader.tables
import backburner.schedules.tables  # noqa: F401
from backburner.db.metadata import metadata


def table_names() -> list[str]:
    """Every table of the schema."""
    return [table.name for table in metadata.sorted_tables]
