"""When evaluations are queued: each domain's cron `schedule`, and new versions.

`EvalScheduler` runs an APScheduler `BackgroundScheduler` with one job per domain
that has a `schedule` (and an active version); a job only queues an evaluation
of the domain's active version in the state store (`enqueue_eval`), the
evaluation worker does the rest. `apply(registry)` is called again after every
registry reload: changed schedules are replaced, removed domains lose their job.

Cron semantics are the registry's (docs/registry.md, classic cron), not
APScheduler 3's own: day-of-week 0 and 7 are Sunday (APScheduler 3 counts 0 as
Monday), `*/2` in day-of-week means Sunday, Tuesday, Thursday, Saturday, and
when both day-of-month and day-of-week are restricted (neither starts with
`*`) the job fires on a day that matches either, as cron does. Each field is
expanded here to the explicit values APScheduler is given. Times are the
scheduler's time zone: the host's local time, like cron.

`enqueue_new_versions(store, registry, at)` queues every version that has never
been evaluated. Importing this module does not import torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

JOB_PREFIX = "eval:"
# A fire delayed this long (a suspended host, a busy process) still queues the job.
MISFIRE_GRACE_SECONDS = 3600

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class EvalScheduler:
    """Cron-scheduled evaluations of each domain's active version.

    `store_url_or_store`: a `StateStore`, or its URL (the scheduler then opens
    the store and closes it at `shutdown`). `clock` gives the `requested_at` of
    the queued jobs.
    """

    def __init__(self, store_url_or_store, clock: Callable[[], float] = time.time):
        from apscheduler.schedulers.background import BackgroundScheduler

        if isinstance(store_url_or_store, str):
            from monitor.state import StateStore

            self.store = StateStore(store_url_or_store)
            self._owns_store = True
        else:
            self.store = store_url_or_store
            self._owns_store = False
        self.clock = clock
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": MISFIRE_GRACE_SECONDS})
        self._crons: dict[str, str] = {}  # domain -> cron of its current job
        self._lock = threading.Lock()

    def apply(self, registry) -> None:
        """Make the jobs match `registry` (None: no registry, no jobs). Idempotent:
        an unchanged schedule keeps its job (and its next fire time)."""
        wanted: dict[str, str] = {}
        for name, dom in (registry.domains.items() if registry is not None else ()):
            if not dom.schedule:
                continue
            if dom.active is None:
                log.info("domain %s has a schedule (%s) but no active version: not scheduled",
                         name, dom.schedule)
                continue
            wanted[name] = " ".join(dom.schedule.split())
        with self._lock:
            for domain in sorted(set(self._crons) - set(wanted)):
                self._remove(domain)
                log.info("domain %s: scheduled evaluation removed", domain)
            for domain, cron in sorted(wanted.items()):
                if self._crons.get(domain) == cron:
                    continue
                try:
                    trigger = cron_trigger(cron, timezone=self.scheduler.timezone)
                except ValueError as exc:
                    log.error("domain %s: schedule %r not usable, not scheduled: %s",
                              domain, cron, exc)
                    self._remove(domain)
                    continue
                # Removed first: before start(), replace_existing does not replace a
                # pending job, it adds a second one.
                self._remove(domain)
                self.scheduler.add_job(self._fire, trigger, args=(domain, cron),
                                       id=JOB_PREFIX + domain, name=f"evaluate {domain}",
                                       replace_existing=True)
                log.info("domain %s: golden-set evaluation scheduled (%s)", domain, cron)
                self._crons[domain] = cron

    def jobs(self) -> dict[str, str]:
        """{domain: cron} of the scheduled evaluations."""
        with self._lock:
            return dict(self._crons)

    def start(self) -> None:
        if not self.scheduler.running:
            self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self._owns_store:
            self.store.close()

    def _remove(self, domain: str) -> None:
        from apscheduler.jobstores.base import JobLookupError

        self._crons.pop(domain, None)
        try:
            self.scheduler.remove_job(JOB_PREFIX + domain)
        except JobLookupError:
            pass

    def _fire(self, domain: str, cron: str) -> str | None:
        """The job: queue an evaluation of the domain's active version."""
        try:
            job_id = self.store.enqueue_eval(domain, None, f"schedule {cron}", self.clock())
        except Exception:  # the scheduler thread must go on; the next fire retries
            log.exception("domain %s: scheduled evaluation not queued", domain)
            return None
        log.info("domain %s: scheduled evaluation queued (job %s)", domain, job_id)
        return job_id


def enqueue_new_versions(store, registry, at: float) -> list[tuple[str, str]]:
    """Queue an evaluation ("new version") of every version of `registry` that is
    not retired, has no evaluation run (done or failed) and no queued or running
    job (a job for the active version, named or not, counts). A version whose
    folder does not exist yet (a candidate listed before it is copied) waits
    until it does. Returns the (domain, version) pairs queued, in registry order."""
    if registry is None:
        return []
    evaluated = {(run["domain"], run["version"]) for run in store.eval_runs()}
    pending: set[tuple[str, str | None]] = set()
    for state in ("queued", "running"):
        pending.update((job["domain"], job["version"]) for job in store.eval_jobs(state))
    queued: list[tuple[str, str]] = []
    for domain, dom in registry.domains.items():
        for name, version in dom.versions.items():
            if version is None or version.status == "retired":
                continue
            if (domain, name) in evaluated or (domain, name) in pending:
                continue
            if name == dom.active and (domain, None) in pending:
                continue
            if not version.path.exists():
                continue
            # Distinct times keep the registry's order in the queue.
            store.enqueue_eval(domain, name, "new version", at + len(queued) * 1e-6)
            queued.append((domain, name))
    if queued:
        log.info("queued evaluation of %d new version(s): %s", len(queued),
                 ", ".join(f"{d}/{v}" for d, v in queued))
    return queued


# -- cron -> APScheduler ------------------------------------------------------------
def cron_trigger(expression: str, timezone=None):
    """An APScheduler trigger firing as cron would for `expression` (5 fields,
    the syntax `monitor.registry.check_cron` accepts); `ValueError` otherwise."""
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.lower().split()
    if len(fields) != 5:
        raise ValueError(f"{expression!r}: a cron expression has 5 fields, got {len(fields)}")
    minute, hour, dom, month, dow = fields
    common = {"minute": _expand(minute, 0, 59), "hour": _expand(hour, 0, 23),
              "month": _expand(month, 1, 12, _MONTHS), "second": 0, "timezone": timezone}
    days = _expand(dom, 1, 31)
    weekdays = _weekdays(dow)
    if dom.startswith("*") or dow.startswith("*"):
        return CronTrigger(day=days, day_of_week=weekdays, **common)
    # Both restricted: cron fires on either (day of month OR day of week).
    return OrTrigger([CronTrigger(day=days, **common),
                      CronTrigger(day_of_week=weekdays, **common)])


def _values(field: str, low: int, high: int, names: tuple[str, ...] = ()) -> set[int]:
    def number(text: str) -> int:
        if text in names:
            return names.index(text) + low
        if not text.isdigit():
            raise ValueError(f"{text!r} is not a number")
        return int(text)

    values: set[int] = set()
    for item in field.split(","):
        span, slash, step_text = item.partition("/")
        step = int(step_text) if slash and step_text.isdigit() else 1
        if slash and not (step_text.isdigit() and step > 0):
            raise ValueError(f"{item!r}: bad step")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first_text, _, last_text = span.partition("-")
            first, last = number(first_text), number(last_text)
        else:
            first = number(span)
            last = high if slash else first  # N/STEP: from N to the end
        if not low <= first <= last <= high:
            raise ValueError(f"{item!r} is out of range {low}-{high}")
        values.update(range(first, last + 1, step))
    return values


def _expand(field: str, low: int, high: int, names: tuple[str, ...] = ()) -> str:
    values = _values(field, low, high, names)
    if values == set(range(low, high + 1)):
        return "*"
    return ",".join(str(v) for v in sorted(values))


def _weekdays(field: str) -> str:
    """Cron's day of week (0-7, 0 and 7 Sunday) as APScheduler day names."""
    values = {v % 7 for v in _values(field, 0, 7, _DAYS)}
    if len(values) == 7:
        return "*"
    return ",".join(_DAYS[v] for v in sorted(values))
