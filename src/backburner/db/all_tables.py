"""Imports every table module so that the shared metadata knows all tables."""

import backburner.db.tables  # noqa: F401
import backburner.leader.tables  # noqa: F401
