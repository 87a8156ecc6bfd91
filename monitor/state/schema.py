"""Tables of the state store (SQLAlchemy Core). Bump SCHEMA_VERSION on any change
and add a migration step in `monitor.state.store`."""

from sqlalchemy import BigInteger, Column, Float, Integer, LargeBinary, MetaData, String, Table

SCHEMA_VERSION = 1

metadata = MetaData()

meta = Table(
    "monitor_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

# Next offset to read per partition: written in the same transaction as the
# state it produced, which is what makes a restart neither lose nor repeat.
offsets = Table(
    "monitor_offsets", metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

domains = Table(
    "monitor_domains", metadata,
    Column("domain", String(128), primary_key=True),
    Column("watermark", Float, nullable=False),
    Column("records_total", BigInteger, nullable=False),
)

window_buckets = Table(
    "monitor_window_buckets", metadata,
    Column("domain", String(128), primary_key=True),
    Column("start", BigInteger, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

rejected = Table(
    "monitor_rejected", metadata,
    Column("reason", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
)
