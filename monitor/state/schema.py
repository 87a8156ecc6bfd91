"""Tables of the state store (SQLAlchemy Core). Bump SCHEMA_VERSION on any change
and add a migration step in `monitor.state.store`."""

from sqlalchemy import (BigInteger, Boolean, Column, Float, Integer, LargeBinary, MetaData, String,
                        Table)

# 1: offsets, domains, window buckets, rejected counts.
# 2: + monitor_references (drift reference profiles).
# 3: + monitor_rule_state (alert state, so a restart keeps `for:` timers and firing alerts).
# 4: + monitor_eval_runs, monitor_eval_items (golden-set results), monitor_eval_jobs (queue).
# 5: + monitor_actions, monitor_audit, monitor_outbox (rollback, retrain, re-evaluate).
SCHEMA_VERSION = 5

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

# One golden-set evaluation of a domain's version: its verdict and the result
# document of DESIGN.md §7 (`doc`, JSON), or the error that stopped it.
eval_runs = Table(
    "monitor_eval_runs", metadata,
    Column("id", String(32), primary_key=True),
    Column("domain", String(128), nullable=False, index=True),
    Column("version", String(128), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
    Column("status", String(16), nullable=False),      # done | failed
    Column("verdict", String(16), nullable=True),      # pass | regressed (done runs)
    Column("doc", LargeBinary, nullable=False),        # JSON: result document or error
)
# Per golden item and scored model ("candidate" version, or a baseline: the
# active version's name, "base").
eval_items = Table(
    "monitor_eval_items", metadata,
    Column("run_id", String(32), primary_key=True),
    Column("model", String(128), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("nll", Float, nullable=False),
    Column("exact_match", Boolean, nullable=False),
    Column("tokens", Integer, nullable=False),
)
# Evaluations waiting for the worker; they survive restarts.
eval_jobs = Table(
    "monitor_eval_jobs", metadata,
    Column("id", String(32), primary_key=True),
    Column("domain", String(128), nullable=False),
    Column("version", String(128), nullable=True),     # null: the active version when it runs
    Column("reason", String(256), nullable=False),
    Column("requested_at", Float, nullable=False),
    Column("state", String(16), nullable=False),       # queued | running | done | failed
    Column("run_id", String(32), nullable=True),
)

# One action (rollback, retrain, reevaluate, promote): from a firing alert (`key`
# names the firing, so it acts once), the command line or the HTTP API.
actions = Table(
    "monitor_actions", metadata,
    Column("id", String(32), primary_key=True),
    Column("key", String(64), nullable=True, unique=True),  # the alert firing; null: by hand
    Column("domain", String(128), nullable=False, index=True),
    Column("action", String(32), nullable=False),
    # pending_approval | executing | executed | dry_run | skipped_cooldown | rejected | failed
    Column("status", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("actor", String(256), nullable=False),          # rule:NAME, cli:USER, token:api
    Column("doc", LargeBinary, nullable=False),             # JSON: reason, params, plan, result
)
# Every action and decision, append-only: who, why, what changed, when, outcome.
audit = Table(
    "monitor_audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("event", String(32), nullable=False),            # the action, approve, reject
    Column("action_id", String(32), nullable=True),
    Column("domain", String(128), nullable=False, index=True),
    Column("outcome", String(32), nullable=False),
    Column("doc", LargeBinary, nullable=False),             # JSON: why and what changed
)
# Messages to publish (control events, serving-hook calls, retrain requests):
# written in the transaction that records the change, published after it.
outbox = Table(
    "monitor_outbox", metadata,
    Column("id", String(32), primary_key=True),
    Column("action_id", String(32), nullable=False, index=True),
    Column("seq", Integer, nullable=False),                 # order within the action
    Column("created_at", Float, nullable=False),
    Column("kind", String(16), nullable=False),             # kafka | http | command
    Column("target", String(1024), nullable=False),         # topic, URL or hook name
    Column("payload", LargeBinary, nullable=False),         # JSON
    Column("state", String(16), nullable=False),            # held | pending | published | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("claimed_until", Float, nullable=True),
    Column("published_at", Float, nullable=True),
    Column("last_error", String(1024), nullable=True),
)
