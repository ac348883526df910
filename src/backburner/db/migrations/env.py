"""Alembic environment: always given a connection by `backburner.db.migrate`."""

from alembic import context

import backburner.db.all_tables  # noqa: F401  (registers every table on the metadata)
from backburner.db.metadata import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
