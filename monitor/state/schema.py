"""Tables of the state store (SQLAlchemy Core). Bump SCHEMA_VERSION on any change
and add a migration step in `monitor.state.store`."""

from sqlalchemy import (BigInteger, Boolean, Column, Float, Integer, LargeBinary, MetaData, String,
                        Table)

# 1: offsets, domains, window buckets, rejected counts.
# 2: + monitor_references (drift reference profiles).
# 3: + monitor_rule_state (alert state, so a restart keeps `for:` timers and firing alerts).
SCHEMA_VERSION = 3

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

# One reference profile per domain and version; `active` marks the one drift is
# measured against (one per domain). `data` is `Reference.to_bytes()`.
references = Table(
    "monitor_references", metadata,
    Column("domain", String(128), primary_key=True),
    Column("version", String(128), primary_key=True),
    Column("id", String(32), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("built_at", Float, nullable=False),
    Column("start", Float, nullable=False),
    Column("end", Float, nullable=False),
    Column("records", BigInteger, nullable=False),
    Column("source", String(1024), nullable=False),
    Column("data", LargeBinary, nullable=False),
)

# The rule manager's state (`RuleManager.state_doc()`, JSON) under one key.
rule_state = Table(
    "monitor_rule_state", metadata,
    Column("key", String(64), primary_key=True),
    Column("saved_at", Float, nullable=False),
    Column("data", LargeBinary, nullable=False),
)
