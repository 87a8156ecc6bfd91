"""Unit tests of monitor.exporter (metrics of DESIGN.md §4) served by monitor.http (§9)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor import __version__
from monitor.exporter import MonitorCollector, SnapshotHolder, make_registry
from monitor.http import MonitorHTTPServer
from monitor.pipeline import DomainSnapshot, Snapshot

SNAPSHOT = Snapshot(
    domains=(
        DomainSnapshot("legal", records_total=120, samples=40,
                       quality={"error_ratio": 0.05, "refusal_ratio": 0.1, "mean_logprob": -0.7},
                       latency={0.5: 0.8, 0.9: 1.5, 0.99: 2.5}),
        DomainSnapshot("support", records_total=7, samples=0, quality={}, latency={}),
    ),
    rejected={"invalid_json": 3, "late": 1},
    consumer_lag={("inference-logs", 0): 5, ("inference-logs", 2): 0},
)


class Ready:
    """A readiness callable the test flips."""

    def __init__(self):
        self.state = (False, "Not ready: loading state.")

    def __call__(self):
        return self.state


# One server for the module (shutting one down costs up to its 0.5 s poll
# interval); each test starts from SNAPSHOT and "not ready".
_HOLDER = SnapshotHolder(SNAPSHOT)
_READY = Ready()


@pytest.fixture(scope="module")
def _server():
    server = MonitorHTTPServer("127.0.0.1", 0, make_registry(_HOLDER), _READY)
    server.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def holder():
    _HOLDER.publish(SNAPSHOT)
    return _HOLDER


@pytest.fixture
def ready():
    _READY.state = (False, "Not ready: loading state.")
    return _READY


@pytest.fixture
def server(_server, holder, ready):
    return _server


def test_a_server_can_be_started_and_shut_down_on_its_own():
    server = MonitorHTTPServer("127.0.0.1", 0, make_registry(SnapshotHolder()), lambda: (True, "ok"))
    thread = server.start()
    try:
        assert get(server, "/-/ready")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    thread.join(timeout=5)

    assert not thread.is_alive()


def get(server, path: str, method: str = "GET"):
    """(status, body, content type) of one request."""
    request = urllib.request.Request(server.url + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), response.headers.get("Content-Type")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type")


def scrape(server) -> dict[str, list]:
    """Samples by sample name, each as (labels, value)."""
    status, body, _ = get(server, "/metrics")
    assert status == 200
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def families(server) -> dict[str, str]:
    _, body, _ = get(server, "/metrics")
    return {f.name: f.type for f in text_string_to_metric_families(body.decode())}


# -- /metrics ----------------------------------------------------------------------

def test_server_listens_on_the_port_it_was_given(server):
    host, port = server.server_address[:2]

    assert host == "127.0.0.1" and port > 0
    assert server.url == f"http://127.0.0.1:{port}"


def test_metrics_endpoint_serves_the_prometheus_text_format(server):
    status, body, content_type = get(server, "/metrics")

    assert status == 200
    assert content_type.startswith("text/plain")
    assert b"# TYPE monitor_records_total counter" in body


def test_metric_families_have_the_types_of_the_design(server):
    types = families(server)

    assert types == {
        "monitor_records": "counter",            # exposed as monitor_records_total
        "monitor_records_rejected": "counter",   # exposed as monitor_records_rejected_total
        "monitor_window_samples": "gauge",
        "monitor_quality": "gauge",
        "monitor_latency_seconds": "gauge",
        "monitor_consumer_lag": "gauge",
        "monitor_build_info": "gauge",
    }


def test_records_total_per_domain(server):
    assert sorted(scrape(server)["monitor_records_total"], key=lambda s: s[0]["domain"]) == [
        ({"domain": "legal"}, 120.0), ({"domain": "support"}, 7.0)]


def test_records_rejected_total_per_reason(server):
    assert sorted(scrape(server)["monitor_records_rejected_total"], key=lambda s: s[0]["reason"]) == [
        ({"reason": "invalid_json"}, 3.0), ({"reason": "late"}, 1.0)]


def test_window_samples_per_domain(server):
    assert sorted(scrape(server)["monitor_window_samples"], key=lambda s: s[0]["domain"]) == [
        ({"domain": "legal"}, 40.0), ({"domain": "support"}, 0.0)]


def test_quality_per_domain_and_signal(server):
    samples = scrape(server)["monitor_quality"]

    assert {(s[0]["domain"], s[0]["signal"]): s[1] for s in samples} == {
        ("legal", "error_ratio"): 0.05,
        ("legal", "refusal_ratio"): 0.1,
        ("legal", "mean_logprob"): -0.7,
    }
    assert all(set(labels) == {"domain", "signal"} for labels, _ in samples)


def test_latency_seconds_per_domain_and_quantile(server):
    samples = scrape(server)["monitor_latency_seconds"]

    assert {(s[0]["domain"], s[0]["quantile"]): s[1] for s in samples} == {
        ("legal", "0.5"): 0.8, ("legal", "0.9"): 1.5, ("legal", "0.99"): 2.5}


def test_consumer_lag_per_topic_and_partition(server):
    samples = scrape(server)["monitor_consumer_lag"]

    assert {(s[0]["topic"], s[0]["partition"]): s[1] for s in samples} == {
        ("inference-logs", "0"): 5.0, ("inference-logs", "2"): 0.0}


def test_build_info_carries_the_version(server):
    assert scrape(server)["monitor_build_info"] == [({"version": __version__}, 1.0)]


def test_no_created_samples_are_exposed(server):
    assert not any(name.endswith("_created") for name in scrape(server))


def test_metrics_follow_the_latest_published_snapshot(server, holder):
    holder.publish(Snapshot(domains=(DomainSnapshot("medical", 1, 1, {}, {}),),
                            rejected={"too_large": 2}))

    samples = scrape(server)

    assert samples["monitor_records_total"] == [({"domain": "medical"}, 1.0)]
    assert samples["monitor_records_rejected_total"] == [({"reason": "too_large"}, 2.0)]
    assert "monitor_consumer_lag" not in samples


def test_empty_snapshot_exposes_only_build_info():
    registry = make_registry(SnapshotHolder())

    names = {s.name for m in registry.collect() for s in m.samples}

    assert names == {"monitor_build_info"}


def test_collector_reads_the_snapshot_at_collect_time():
    snapshots = [Snapshot(), SNAPSHOT]
    collector = MonitorCollector(lambda: snapshots[-1])

    first = {m.name: len(m.samples) for m in collector.collect()}
    snapshots.append(Snapshot())
    second = {m.name: len(m.samples) for m in collector.collect()}

    assert first["monitor_records"] == 2
    assert second["monitor_records"] == 0


def test_snapshot_holder_starts_empty_and_swaps():
    holder = SnapshotHolder()

    assert holder.get() == Snapshot()
    holder.publish(SNAPSHOT)
    assert holder.get() is SNAPSHOT


# -- health, readiness, unknown paths ----------------------------------------------

def test_healthy_is_200(server):
    status, body, _ = get(server, "/-/healthy")

    assert status == 200
    assert body


def test_ready_is_503_while_not_ready_and_says_why(server, ready):
    status, body, _ = get(server, "/-/ready")

    assert status == 503
    assert body.decode().strip() == "Not ready: loading state."


def test_ready_becomes_200_when_the_callable_says_so(server, ready):
    assert get(server, "/-/ready")[0] == 503

    ready.state = (True, "Ready.")
    status, body, _ = get(server, "/-/ready")

    assert status == 200
    assert body.decode().strip() == "Ready."


def test_ready_goes_back_to_503(server, ready):
    ready.state = (True, "Ready.")
    assert get(server, "/-/ready")[0] == 200

    ready.state = (False, "Not ready: waiting for a partition assignment from Kafka.")

    assert get(server, "/-/ready")[0] == 503


@pytest.mark.parametrize("path", ["/index.htm", "/metric", "/-/nothing", "/api/v1/unknown"])
def test_unknown_path_is_404(server, path):
    assert get(server, path)[0] == 404


def test_query_string_is_ignored(server):
    assert get(server, "/metrics?name[]=monitor_build_info")[0] == 200
    assert get(server, "/-/healthy?x=1")[0] == 200


def test_head_request_returns_headers_without_a_body(server):
    status, body, _ = get(server, "/-/healthy", method="HEAD")

    assert status == 200
    assert body == b""


def test_several_requests_are_served_one_after_another(server):
    assert [get(server, "/-/healthy")[0] for _ in range(20)] == [200] * 20
