"""State store over SQLAlchemy Core: SQLite (the statements stay dialect-neutral, with
Postgres upserts ready for the multi-replica set-up, which is not tested yet).

`commit(changes)` writes changed window buckets, counters and the next
offsets in one transaction, so the stored state always matches the stored
offsets exactly: after a crash the daemon reloads both and re-reads from there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import create_engine, delete, event, func, select, tuple_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from monitor.drift.reference import ANY
from monitor.errors import StateError
from monitor.state import schema
from monitor.state.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)


@dataclass
class StoredState:
    """Everything read back at start-up."""

    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    watermarks: dict[str, float] = field(default_factory=dict)
    records_total: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, dict[int, bytes]] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    references: dict = field(default_factory=dict)  # domain -> active Reference


@dataclass
class StateChanges:
    """One transaction's worth of changes; counters are absolute values."""

    buckets: list[tuple[str, int, bytes]] = field(default_factory=list)
    dropped_buckets: list[tuple[str, int]] = field(default_factory=list)
    domains: dict[str, tuple[float, int]] = field(default_factory=dict)  # watermark, records_total
    rejected: dict[str, int] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    references: list = field(default_factory=list)  # new Reference objects, each made active


class StateStore:
    """Opens (and creates or migrates) the store at `url`.

    >>> store = StateStore("sqlite://")
    >>> store.commit(StateChanges(domains={"legal": (1.0, 3)}, offsets={("logs", 0): 3}))
    >>> store.load().records_total, store.load().offsets
    ({'legal': 3}, {('logs', 0): 3})
    """

    def __init__(self, url: str):
        self.url = url
        try:
            self.engine = _engine(url)
            self._migrate()
        except SQLAlchemyError as exc:
            raise StateError(f"state store {_redact(url)}: {exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0]}") from exc

    def _migrate(self) -> None:
        from sqlalchemy import inspect

        with self.engine.begin() as conn:
            # Refuse a newer store before touching it.
            if inspect(conn).has_table(schema.meta.name):
                row = conn.execute(select(schema.meta.c.value)
                                   .where(schema.meta.c.key == "schema_version")).first()
                if row is not None and int(row[0]) > SCHEMA_VERSION:
                    raise StateError(f"state store {_redact(self.url)} has schema version "
                                     f"{row[0]}, newer than this monitor's {SCHEMA_VERSION}; "
                                     "upgrade the monitor")
            schema.metadata.create_all(conn)
            row = conn.execute(select(schema.meta.c.value)
                               .where(schema.meta.c.key == "schema_version")).first()
            if row is None:
                conn.execute(schema.meta.insert().values(key="schema_version",
                                                         value=str(SCHEMA_VERSION)))
            elif int(row[0]) < SCHEMA_VERSION:
                # 1 -> ... -> 5 only added tables, which create_all has just made.
                conn.execute(update(schema.meta).where(schema.meta.c.key == "schema_version")
                             .values(value=str(SCHEMA_VERSION)))

    def load(self) -> StoredState:
        state = StoredState()
        with self.engine.connect() as conn:
            for topic, partition, offset in conn.execute(select(schema.offsets)):
                state.offsets[(topic, partition)] = offset
            for domain, watermark, total in conn.execute(select(schema.domains)):
                state.watermarks[domain] = watermark
                state.records_total[domain] = total
            for domain, start, data in conn.execute(select(schema.window_buckets)):
                state.buckets.setdefault(domain, {})[start] = data
            for reason, count in conn.execute(select(schema.rejected)):
                state.rejected[reason] = count
            state.references = self._references(conn, active_only=True)
        return state

    def references(self, domain: str | None = None, active_only: bool = False) -> dict:
        """Stored references: {domain: Reference} when `active_only`, else {(domain, version): ...}."""
        with self.engine.connect() as conn:
            return self._references(conn, domain, active_only)

    def _references(self, conn, domain: str | None = None, active_only: bool = False) -> dict:
        from monitor.drift.reference import Reference

        table = schema.references
        query = select(table.c.domain, table.c.version, table.c.data)
        if domain is not None:
            query = query.where(table.c.domain == domain)
        if active_only:
            query = query.where(table.c.active.is_(True))
        found = {}
        for d, version, data in conn.execute(query.order_by(table.c.domain, table.c.version)):
            found[d if active_only else (d, version)] = Reference.from_bytes(data)
        return found

    def active_reference_ids(self) -> dict[str, str]:
        """{domain: id of its active reference}: cheap, for noticing a rebuilt reference."""
        table = schema.references
        with self.engine.connect() as conn:
            return dict(conn.execute(select(table.c.domain, table.c.id)
                                     .where(table.c.active.is_(True))).all())

    def save_reference(self, reference) -> None:
        """Store `reference` as its domain's active reference, whatever was active
        (what `monitor reference build` does)."""
        reference.replaces = ANY
        self.commit(StateChanges(references=[reference]))

    def rule_state(self) -> dict | None:
        """The rule manager's saved state (`RuleManager.state_doc()`), or None."""
        import orjson

        with self.engine.connect() as conn:
            row = conn.execute(select(schema.rule_state.c.data)
                               .where(schema.rule_state.c.key == "rules")).first()
        return orjson.loads(row[0]) if row is not None else None

    def save_rule_state(self, doc: dict, at: float) -> None:
        import orjson

        try:
            with self.engine.begin() as conn:
                _upsert(conn, schema.rule_state, ("key",),
                        [{"key": "rules", "saved_at": at, "data": orjson.dumps(doc)}])
        except SQLAlchemyError as exc:
            raise StateError(f"state store {_redact(self.url)}: saving alert state: "
                             f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}") from exc

    # -- golden-set evaluations ---------------------------------------------------
    def save_eval_run(self, run: dict, items: dict[str, list] | None = None) -> None:
        """One evaluation: `run` has id, domain, version, started_at, finished_at,
        status, verdict and doc (a JSON-able dict); `items` maps a scored model
        ("candidate", a baseline name) to its `ItemScore`s. One transaction."""
        import orjson

        rows = [{"run_id": run["id"], "model": model, "item_id": score.id, "nll": score.nll,
                 "exact_match": bool(score.exact_match), "tokens": score.tokens}
                for model, scores in (items or {}).items() for score in scores]
        try:
            with self.engine.begin() as conn:
                conn.execute(schema.eval_runs.insert().values(
                    id=run["id"], domain=run["domain"], version=run["version"],
                    started_at=run["started_at"], finished_at=run["finished_at"],
                    status=run["status"], verdict=run.get("verdict"),
                    doc=orjson.dumps(run["doc"], option=orjson.OPT_SERIALIZE_NUMPY)))
                if rows:
                    conn.execute(schema.eval_items.insert(), rows)
        except SQLAlchemyError as exc:
            raise StateError(f"state store {_redact(self.url)}: saving evaluation {run['id']}: "
                             f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}") from exc

    def eval_runs(self, domain: str | None = None, status: str | None = None) -> list[dict]:
        """Evaluation runs, oldest first, each with its decoded `doc`."""
        import orjson

        table = schema.eval_runs
        query = select(table).order_by(table.c.finished_at, table.c.id)
        if domain is not None:
            query = query.where(table.c.domain == domain)
        if status is not None:
            query = query.where(table.c.status == status)
        with self.engine.connect() as conn:
            return [{**row._asdict(), "doc": orjson.loads(row.doc)} for row in conn.execute(query)]

    def latest_eval_runs(self) -> list[dict]:
        """The latest finished evaluation of each (domain, version): its domain,
        version, status, verdict and finished_at (no doc: cheap enough for a page
        that refreshes every few seconds, however long the history)."""
        table = schema.eval_runs
        done = table.c.status == "done"
        last = (select(table.c.domain, table.c.version,
                       func.max(table.c.finished_at).label("finished_at"))
                .where(done).group_by(table.c.domain, table.c.version).subquery())
        query = (select(table.c.domain, table.c.version, table.c.status, table.c.verdict,
                        table.c.finished_at, table.c.id)
                 .join(last, (table.c.domain == last.c.domain)
                       & (table.c.version == last.c.version)
                       & (table.c.finished_at == last.c.finished_at))
                 .where(done).order_by(table.c.finished_at, table.c.id))
        with self.engine.connect() as conn:
            return [row._asdict() for row in conn.execute(query)]

    def latest_verdicts(self) -> dict[tuple[str, str], str]:
        """{(domain, version): verdict of its latest finished evaluation}."""
        return {(run["domain"], run["version"]): run["verdict"]
                for run in self.latest_eval_runs()}

    def eval_items(self, run_id: str) -> dict[str, dict[str, tuple[float, bool]]]:
        """{model: {item_id: (nll, exact_match)}} of one run."""
        table = schema.eval_items
        out: dict[str, dict[str, tuple[float, bool]]] = {}
        with self.engine.connect() as conn:
            for model, item, nll, em in conn.execute(
                    select(table.c.model, table.c.item_id, table.c.nll, table.c.exact_match)
                    .where(table.c.run_id == run_id)):
                out.setdefault(model, {})[item] = (nll, bool(em))
        return out

    # -- the evaluation job queue ---------------------------------------------------
    def enqueue_eval(self, domain: str, version: str | None, reason: str, at: float) -> str:
        """Queue an evaluation (version None: the active one when it runs); a job
        already queued for the same domain and version is reused. Returns its id."""
        import uuid

        table = schema.eval_jobs
        with self.engine.begin() as conn:
            same = (table.c.version.is_(None) if version is None else table.c.version == version)
            row = conn.execute(select(table.c.id).where(table.c.domain == domain, same,
                                                        table.c.state == "queued")).first()
            if row is not None:
                return row[0]
            job_id = uuid.uuid4().hex
            conn.execute(table.insert().values(id=job_id, domain=domain, version=version,
                                               reason=reason[:256], requested_at=at,
                                               state="queued", run_id=None))
            return job_id

    def claim_eval_job(self) -> dict | None:
        """The oldest queued job, marked running (None when the queue is empty). Only
        one worker claims a job: the update checks it is still queued."""
        table = schema.eval_jobs
        while True:
            with self.engine.begin() as conn:
                row = conn.execute(select(table).where(table.c.state == "queued")
                                   .order_by(table.c.requested_at, table.c.id).limit(1)).first()
                if row is None:
                    return None
                done = conn.execute(update(table).where(table.c.id == row.id,
                                                        table.c.state == "queued")
                                    .values(state="running"))
                if done.rowcount == 1:
                    return {**row._asdict(), "state": "running"}

    def finish_eval_job(self, job_id: str, state: str, run_id: str | None) -> None:
        table = schema.eval_jobs
        with self.engine.begin() as conn:
            conn.execute(update(table).where(table.c.id == job_id)
                         .values(state=state, run_id=run_id))

    def requeue_running_evals(self) -> int:
        """Jobs left running by a worker that died: queued again (at start)."""
        table = schema.eval_jobs
        with self.engine.begin() as conn:
            return conn.execute(update(table).where(table.c.state == "running")
                                .values(state="queued")).rowcount

    def eval_jobs(self, state: str | None = None) -> list[dict]:
        table = schema.eval_jobs
        query = select(table).order_by(table.c.requested_at, table.c.id)
        if state is not None:
            query = query.where(table.c.state == state)
        with self.engine.connect() as conn:
            return [row._asdict() for row in conn.execute(query)]

    def offsets(self, topic: str) -> dict[int, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.offsets.c.partition, schema.offsets.c.next_offset)
                                .where(schema.offsets.c.topic == topic))
            return dict(rows.all())

    def commit(self, changes: StateChanges) -> None:
        """Write all of `changes` atomically; raise `StateError` when the store refuses."""
        try:
            with self.engine.begin() as conn:
                if changes.dropped_buckets:
                    table = schema.window_buckets
                    conn.execute(delete(table).where(
                        tuple_(table.c.domain, table.c.start).in_(changes.dropped_buckets)))
                _upsert(conn, schema.window_buckets, ("domain", "start"),
                        [{"domain": d, "start": s, "data": b} for d, s, b in changes.buckets])
                _upsert(conn, schema.domains, ("domain",),
                        [{"domain": d, "watermark": w, "records_total": t}
                         for d, (w, t) in changes.domains.items()])
                _upsert(conn, schema.rejected, ("reason",),
                        [{"reason": r, "count": c} for r, c in changes.rejected.items()])
                _upsert(conn, schema.offsets, ("topic", "partition"),
                        [{"topic": t, "partition": p, "next_offset": o}
                         for (t, p), o in changes.offsets.items()])
                for ref in changes.references:
                    table = schema.references
                    active = conn.execute(select(table.c.id).where(
                        table.c.domain == ref.domain, table.c.active.is_(True))).scalar()
                    if ref.replaces != ANY and active != ref.replaces:
                        # Set meanwhile (`monitor reference build`): that one stays.
                        log.info("domain %s: keeping reference %s set meanwhile; the one built "
                                 "from its first records (%s) is dropped", ref.domain, active,
                                 ref.id)
                        continue
                    conn.execute(update(table).where(table.c.domain == ref.domain)
                                 .values(active=False))
                    _upsert(conn, table, ("domain", "version"),
                            [{"domain": ref.domain, "version": ref.version, "id": ref.id,
                              "active": True, "built_at": ref.built_at, "start": ref.start,
                              "end": ref.end, "records": ref.count, "source": ref.source[:1024],
                              "data": ref.to_bytes()}])
        except SQLAlchemyError as exc:
            raise StateError(f"state store {_redact(self.url)}: commit failed: "
                             f"{str(exc).splitlines()[0]}") from exc

    def close(self) -> None:
        self.engine.dispose()


def stored_verdicts(url: str) -> dict[tuple[str, str], str]:
    """The latest golden-set verdict per (domain, version) of the store at `url`,
    for readers that must not create one: {} when its SQLite file does not exist."""
    from pathlib import Path

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return {}
    store = StateStore(url)
    try:
        return store.latest_verdicts()
    finally:
        store.close()


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            # WAL + NORMAL: a committed transaction survives a killed process,
            # and readers (the CLI, tests) do not block the daemon.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _upsert(conn, table, keys: tuple[str, ...], rows: list[dict]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise StateError(f"unsupported database {dialect!r}: use sqlite or postgresql")
    stmt = insert(table)
    updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=updates), rows)


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"
