"""Tables of leader election, scheduling and membership."""

from sqlalchemy import BigInteger, Column, Float, Integer, String, Table, Text, UniqueConstraint

from backburner.db.metadata import metadata
from backburner.db.types import UTCDateTime

# One row per election name; every acquisition increments `epoch` (the fencing token).
leader_epochs = Table(
    "leader_epochs",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("holder", String(200), nullable=False),
    Column("acquired_at", UTCDateTime(), nullable=False),
    # Written by the leader's `heartbeat` job, through the fence: proof that the term is alive.
    Column("heartbeat_at", UTCDateTime()),
    # Set when the holder ended its term while still current (graceful release or step-down).
    Column("released_at", UTCDateTime()),
)

# Every run of a leader-only job; (job_id, fire_time) is unique so a tick runs once.
job_runs = Table(
    "job_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(200), nullable=False),
    Column("election", String(200), nullable=False),
    Column("fire_time", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    # running | succeeded | failed | cancelled | abandoned (closed by the next term)
    Column("outcome", String(20), nullable=False),
    Column("error", Text),
    Column("duration_s", Float),
    Column("epoch", BigInteger, nullable=False),
    Column("instance_id", String(200), nullable=False),
    UniqueConstraint("job_id", "fire_time"),
)

instances = Table(
    "instances",
    metadata,
    Column("instance_id", String(200), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("role", String(20), nullable=False),  # leader | follower
    Column("process", String(20), nullable=False),  # serve | worker
    Column("started_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
)

# Jobs an operator paused; the leader skips their ticks until they are resumed.
job_pauses = Table(
    "job_pauses",
    metadata,
    Column("job_id", String(200), primary_key=True),
    Column("paused_at", UTCDateTime(), nullable=False),
)
