"""Actions, the audit log and the outbox in the state store (SQLAlchemy Core).

Every status change of an action is one transaction that also appends its audit
entry and writes (or releases) its outbox messages: the store never says an
action executed without the messages that announce it, and never holds a
message for a change that did not happen.

>>> from monitor.state import StateStore
>>> actions = ActionStore(StateStore("sqlite://"))
>>> row, new = actions.create(domain="legal", action="retrain", status="dry_run", at=1.0,
...                           actor="rule:Drift", doc={}, key="k1")
>>> actions.create(domain="legal", action="retrain", status="dry_run", at=2.0,
...                actor="rule:Drift", doc={}, key="k1")[1]
False
>>> [(a["domain"], a["status"]) for a in actions.list()]
[('legal', 'dry_run')]
"""

from __future__ import annotations

import uuid

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from monitor.errors import StateError
from monitor.state import schema


class ActionStore:
    """The action tables of one `StateStore` (shares its engine)."""

    def __init__(self, state):
        self.state = state
        self.engine = state.engine

    # -- actions -------------------------------------------------------------------
    def create(self, *, domain: str, action: str, status: str, at: float, actor: str,
               doc: dict, key: str | None = None, audit: dict | None = None,
               outbox: list[dict] | None = None,
               action_id: str | None = None) -> tuple[dict, bool]:
        """Insert an action (and its audit entry and outbox messages) in one
        transaction; with a `key` already taken, nothing is written and the
        existing action is returned with False."""
        row = {"id": action_id or uuid.uuid4().hex, "key": key, "domain": domain, "action": action,
               "status": status, "created_at": at, "updated_at": at, "actor": actor[:256],
               "doc": orjson.dumps(doc)}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(schema.actions).values(**row))
                if audit is not None:
                    self._audit(conn, {"action_id": row["id"], "domain": domain, "at": at,
                                       "actor": actor, "event": action, "outcome": status,
                                       **audit})
                self._outbox(conn, row["id"], at, outbox or ())
        except IntegrityError:
            if key is None:
                raise
            existing = self.by_key(key)
            if existing is None:
                raise
            return existing, False
        except SQLAlchemyError as exc:
            raise StateError(f"action not recorded: {str(exc).splitlines()[0]}") from exc
        return _decode(row), True

    def transition(self, action_id: str, status: str, at: float, *, expect: tuple[str, ...],
                   doc: dict | None = None, audit: dict | None = None,
                   outbox: list[dict] | None = None, release: bool = False) -> bool:
        """Move an action to `status` if its status is one of `expect` (False when
        it is not: someone else decided first); merge `doc` into its document,
        append `audit`, add `outbox` messages, and with `release` make its held
        messages publishable, all in one transaction."""
        table = schema.actions
        try:
            with self.engine.begin() as conn:
                current = conn.execute(select(table).where(table.c.id == action_id)).first()
                if current is None or current.status not in expect:
                    return False
                merged = {**orjson.loads(current.doc), **(doc or {})}
                done = conn.execute(update(table).where(table.c.id == action_id,
                                                        table.c.status == current.status)
                                    .values(status=status, updated_at=at,
                                            doc=orjson.dumps(merged)))
                if done.rowcount != 1:
                    return False
                if audit is not None:
                    self._audit(conn, {"action_id": action_id, "domain": current.domain,
                                       "at": at, "event": current.action, "outcome": status,
                                       **audit})
                self._outbox(conn, action_id, at, outbox or ())
                if release:
                    conn.execute(update(schema.outbox)
                                 .where(schema.outbox.c.action_id == action_id,
                                        schema.outbox.c.state == "held")
                                 .values(state="pending", next_attempt_at=at))
                return True
        except SQLAlchemyError as exc:
            raise StateError(f"action {action_id} not updated: {str(exc).splitlines()[0]}") from exc

    def get(self, action_id: str) -> dict | None:
        table = schema.actions
        with self.engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.id == action_id)).first()
        return _decode(row._asdict()) if row is not None else None

    def by_key(self, key: str) -> dict | None:
        table = schema.actions
        with self.engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.key == key)).first()
        return _decode(row._asdict()) if row is not None else None

    def list(self, *, status: str | tuple[str, ...] | None = None, domain: str | None = None,
             limit: int | None = None) -> list[dict]:
        """Actions, newest first."""
        table = schema.actions
        query = select(table).order_by(table.c.created_at.desc(), table.c.id)
        if status is not None:
            statuses = (status,) if isinstance(status, str) else tuple(status)
            query = query.where(table.c.status.in_(statuses))
        if domain is not None:
            query = query.where(table.c.domain == domain)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_decode(row._asdict()) for row in conn.execute(query)]

    def last_at(self, domain: str, action: str, statuses: tuple[str, ...]) -> float | None:
        """When an action of this kind on this domain last reached one of `statuses`."""
        table = schema.actions
        with self.engine.connect() as conn:
            return conn.execute(select(func.max(table.c.updated_at)).where(
                table.c.domain == domain, table.c.action == action,
                table.c.status.in_(statuses))).scalar()

    def counts(self) -> dict[tuple[str, str, str], int]:
        """{(domain, action, outcome): count} for `monitor_actions_total`: how many
        times actions reached each outcome, from the append-only audit log, so the
        counts never go down (a pending action that is approved later counts once
        as pending_approval and once as executed)."""
        from monitor.actions.model import FINAL, PENDING_APPROVAL

        actions, audit = schema.actions, schema.audit
        outcomes = (PENDING_APPROVAL,) + FINAL
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(actions.c.domain, actions.c.action, audit.c.outcome, func.count())
                .join(audit, audit.c.action_id == actions.c.id)
                .where(audit.c.outcome.in_(outcomes))
                .group_by(actions.c.domain, actions.c.action, audit.c.outcome))
            return {(d, a, o): n for d, a, o, n in rows}

    # -- audit ----------------------------------------------------------------------
    def audit(self, *, at: float, actor: str, event: str, domain: str, outcome: str,
              action_id: str | None = None, **doc) -> None:
        """Append an entry that is not an action's status change (a refused promotion)."""
        with self.engine.begin() as conn:
            self._audit(conn, {"at": at, "actor": actor, "event": event, "domain": domain,
                               "outcome": outcome, "action_id": action_id, **doc})

    def audit_log(self, domain: str | None = None, limit: int | None = None) -> list[dict]:
        """Audit entries, oldest first (the newest `limit` of them)."""
        table = schema.audit
        query = select(table).order_by(table.c.id.desc())
        if domain is not None:
            query = query.where(table.c.domain == domain)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = [_plain(row._asdict()) for row in conn.execute(query)]
        for row in rows:
            row["doc"] = orjson.loads(row["doc"])
        return rows[::-1]

    @staticmethod
    def _audit(conn, entry: dict) -> None:
        fixed = {"at", "actor", "event", "action_id", "domain", "outcome"}
        doc = {k: v for k, v in entry.items() if k not in fixed}
        conn.execute(insert(schema.audit).values(
            at=entry["at"], actor=str(entry["actor"])[:256], event=entry["event"],
            action_id=entry.get("action_id"), domain=entry["domain"],
            outcome=entry["outcome"], doc=orjson.dumps(doc, default=str)))

    # -- outbox ----------------------------------------------------------------------
    @staticmethod
    def _outbox(conn, action_id: str, at: float, messages) -> None:
        """Messages: {"kind", "target", "payload", "held" (default False)}."""
        start = conn.execute(select(func.count()).where(
            schema.outbox.c.action_id == action_id)).scalar()
        for seq, message in enumerate(messages, start=start):
            conn.execute(insert(schema.outbox).values(
                id=uuid.uuid4().hex, action_id=action_id, seq=seq, created_at=at,
                kind=message["kind"], target=message["target"][:1024],
                payload=orjson.dumps(message["payload"]),
                state="held" if message.get("held") else "pending", attempts=0,
                next_attempt_at=at, claimed_until=None, published_at=None, last_error=None))

    def outbox(self, action_id: str | None = None, state: str | None = None) -> list[dict]:
        table = schema.outbox
        query = select(table).order_by(table.c.created_at, table.c.action_id, table.c.seq)
        if action_id is not None:
            query = query.where(table.c.action_id == action_id)
        if state is not None:
            query = query.where(table.c.state == state)
        with self.engine.connect() as conn:
            return [{**_plain(row._asdict()), "payload": orjson.loads(row.payload)}
                    for row in conn.execute(query)]

    def claim_outbox(self, now: float, lease: float, action_id: str | None = None) -> list[dict]:
        """Pending messages that are due, in order, each claimed for `lease` seconds
        (so two publishers, the daemon's and a command's, never send one twice).
        A message waits while an earlier message of its action is unpublished."""
        table = schema.outbox
        claimed = []
        blocked: set[str] = set()
        for row in self.outbox(action_id):
            if row["state"] == "published":
                continue
            if row["action_id"] in blocked:
                continue
            # Later messages wait for this one; after one given up (failed), they
            # are not sent either: a load must not follow an unload that never went.
            blocked.add(row["action_id"])
            if row["state"] == "failed":
                continue
            if row["state"] != "pending" or row["next_attempt_at"] > now:
                continue
            if row["claimed_until"] is not None and row["claimed_until"] > now:
                continue
            with self.engine.begin() as conn:
                done = conn.execute(update(table).where(
                    table.c.id == row["id"], table.c.state == "pending",
                    (table.c.claimed_until.is_(None)) | (table.c.claimed_until <= now))
                    .values(claimed_until=now + lease))
            if done.rowcount == 1:
                claimed.append(row)
        return claimed

    def outbox_published(self, message_id: str, at: float) -> None:
        table = schema.outbox
        with self.engine.begin() as conn:
            conn.execute(update(table).where(table.c.id == message_id).values(
                state="published", published_at=at, claimed_until=None, last_error=None))

    def outbox_attempted(self, message_id: str) -> None:
        """Count an attempt before sending (a crash during the send leaves it counted)."""
        table = schema.outbox
        with self.engine.begin() as conn:
            conn.execute(update(table).where(table.c.id == message_id)
                         .values(attempts=table.c.attempts + 1))

    def outbox_failed(self, message_id: str, error: str, retry_at: float | None) -> None:
        """A failed send: retried at `retry_at`, or given up (None)."""
        table = schema.outbox
        values = {"claimed_until": None, "last_error": error[:1024]}
        if retry_at is None:
            values["state"] = "failed"
        else:
            values["next_attempt_at"] = retry_at
        with self.engine.begin() as conn:
            conn.execute(update(table).where(table.c.id == message_id).values(**values))


def _plain(row: dict) -> dict:
    """Column names as plain str (SQLAlchemy's are a str subclass orjson refuses)."""
    return {str(key): value for key, value in row.items()}


def _decode(row: dict) -> dict:
    row = _plain(row)
    doc = row["doc"]
    return {**row, "doc": orjson.loads(doc) if isinstance(doc, (bytes, bytearray, memoryview))
            else doc}
