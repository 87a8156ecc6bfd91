"""The demo's PNG charts, drawn from the daemon's own series.

The series come from the daemon's `GET /api/v1/query_range` (Prometheus' API
shape, evaluated over the series the daemon keeps for its rules), so the
charts show exactly what the rules saw. matplotlib is imported here only.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

from monitor.demo.timeline import Event, get


def query_range(url: str, query: str, start: float, end: float, step: float) -> list[dict]:
    """[{"metric": labels, "values": [(t, value)]}] from the daemon at `url`."""
    params = urllib.parse.urlencode({"query": query, "start": f"{start:.3f}",
                                     "end": f"{end:.3f}", "step": f"{step:g}"})
    doc = json.loads(get(f"{url}/api/v1/query_range?{params}", timeout=30))
    if doc.get("status") != "success":
        raise RuntimeError(f"query_range {query!r}: {doc.get('error')}")
    return [{"metric": r["metric"], "values": [(float(t), float(v)) for t, v in r["values"]]}
            for r in doc["data"]["result"]]


Mark = tuple[float, str, str]  # (seconds since the start, label, colour)


def marks_of(events: list[Event], domains: set[str]) -> list[Mark]:
    """Vertical lines for the scenario's changes and the executed actions of `domains`."""
    out = []
    for e in events:
        if e.domain not in domains:
            continue
        if e.kind == "scenario" and e.data.get("mark"):
            out.append((e.t, e.data["mark"], "tab:orange"))
        elif e.kind == "action" and e.data.get("status") == "executed":
            out.append((e.t, f"{e.data.get('action')} executed", "tab:red"))
    return out


def _axes_markers(ax, marks: list[Mark]) -> None:
    for t, label, colour in marks:
        ax.axvline(t, color=colour, linestyle=":", linewidth=1.2)
        ax.annotate(label, (t, 0.97), xycoords=("data", "axes fraction"), rotation=90,
                    va="top", ha="right", fontsize=8, color=colour)


def drift_chart(url: str, domain: str, others: list[str], start: float, end: float,
                threshold: float, marks: list[Mark], out: Path) -> Path:
    """Top: PSI of every numeric and categorical feature of `domain` and the
    embedding's MMD²; bottom: prompt-length PSI of every domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = max(1.0, (end - start) / 300)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for series in query_range(url, f'monitor_drift_score{{domain="{domain}",method="psi"}}',
                              start, end, step):
        xs = [t - start for t, _ in series["values"]]
        top.plot(xs, [v for _, v in series["values"]], label=series["metric"]["feature"])
    for series in query_range(url, f'monitor_drift_score{{domain="{domain}",method="mmd"}}',
                              start, end, step):
        xs = [t - start for t, _ in series["values"]]
        top.plot(xs, [v for _, v in series["values"]], label="embedding (MMD²)", linestyle="--")
    top.axhline(threshold, color="grey", linestyle="--", linewidth=1)
    top.set_title(f"{domain}: drift score per feature (PSI, dashed: its effect threshold {threshold:g})")
    top.set_ylabel("score")
    top.legend(fontsize=7, ncol=3, loc="upper left")
    _axes_markers(top, marks)
    top.set_xlim(0, end - start)
    for d in [domain] + others:
        for series in query_range(
                url, f'monitor_drift_score{{domain="{d}",feature="prompt_tokens",method="psi"}}',
                start, end, step):
            bottom.plot([t - start for t, _ in series["values"]],
                        [v for _, v in series["values"]], label=d)
    bottom.axhline(threshold, color="grey", linestyle="--", linewidth=1)
    bottom.set_title("prompt_tokens PSI per domain")
    bottom.set_xlabel("seconds since the traffic started")
    bottom.set_ylabel("PSI")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def golden_chart(url: str, start: float, end: float, marks: list[Mark], out: Path) -> Path:
    """The golden-set NLL of the version each domain serves, over time: a
    regressed rollout shows as a jump, the rollback as the return."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = max(1.0, (end - start) / 300)
    query = ('monitor_golden_score{metric="nll"} '
             'and on (domain, version) monitor_adapter_active_info == 1')
    fig, ax = plt.subplots(figsize=(10, 4.5))
    lines: dict[str, list] = {}
    for series in query_range(url, query, start, end, step):
        lines.setdefault(series["metric"]["domain"], []).extend(
            (t - start, v, series["metric"]["version"]) for t, v in series["values"])
    for domain, points in sorted(lines.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", markersize=3,
                label=domain)
        last = None
        for x, y, version in points:
            if version != last:
                ax.annotate(version, (x, y), fontsize=8, textcoords="offset points",
                            xytext=(3, 4))
                last = version
    ax.set_yscale("log")
    ax.set_title("golden-set NLL of the active version (lower is better)")
    ax.set_xlabel("seconds since the traffic started")
    ax.set_ylabel("mean token NLL")
    ax.legend(fontsize=8)
    _axes_markers(ax, marks)
    ax.set_xlim(0, end - start)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
