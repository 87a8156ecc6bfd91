"""Synthetic inference traffic for the demo, tests and benchmarks.

Records follow schema v1 with per-domain character (prompt lengths, latency,
refusal and error rates); `malformed_every=k` makes every k-th message a bad
record, cycling through the ways a record can be wrong.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

import orjson

from monitor.synthetic_prompts import TOPICS

DOMAINS = {
    # name: (mean prompt tokens, mean latency ms, refusal rate, error rate)
    "legal": (420, 850.0, 0.02, 0.01),
    "support": (120, 320.0, 0.05, 0.02),
    "medical": (260, 610.0, 0.08, 0.005),
}

MALFORMED = (
    (b"{not json", "invalid_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'{"schema_version": 1, "timestamp": 1764359649123, "input": {"tokens": 3}}', "missing_field"),
    (b'{"schema_version": 1, "timestamp": 1764359649123, "domain": 7, "input": {"tokens": 3}}',
     "bad_type"),
    (b'{"schema_version": 1, "timestamp": "yesterday", "domain": "legal", "input": {"tokens": 3}}',
     "bad_timestamp"),
    (b'{"schema_version": 2, "timestamp": 1764359649123, "domain": "legal", "input": {"tokens": 3}}',
     "unsupported_version"),
)


@dataclass(frozen=True)
class Message:
    domain: str | None
    value: bytes
    expected_reason: str | None  # None for a valid record


def traffic(count: int, start: float, rate: float = 100.0, seed: int = 7,
            domains: dict = DOMAINS, malformed_every: int = 0) -> Iterator[Message]:
    """`count` messages with event times from `start` (epoch seconds) at `rate` per second."""
    rng = random.Random(seed)
    names = sorted(domains)
    # Real prompt texts (by the domain's topic where one exists), for semantic drift.
    pool = PromptPool(size=500, chars_median=400.0, seed=seed)
    for i in range(count):
        if malformed_every and i % malformed_every == malformed_every - 1:
            raw, reason = MALFORMED[(i // malformed_every) % len(MALFORMED)]
            yield Message(None, raw, reason)
            continue
        domain = names[i % len(names)]
        tokens, latency, refusal, error = domains[domain]
        prompt_tokens = max(1, int(rng.gauss(tokens, tokens * 0.25)))
        refused = rng.random() < refusal
        failed = rng.random() < error
        output = "I'm sorry, I can't help with that." if refused else "Here is the answer. " * 3
        record = {
            "schema_version": 1,
            "request_id": f"{seed:x}-{i:09x}",
            "timestamp": int((start + i / rate) * 1000),
            "domain": domain,
            "model": {"base": "tiny-llama", "kind": "lora", "version": "v2"},
            "input": {"text": rng.choice(pool.texts(domain if domain in TOPICS else "support")),
                      "tokens": prompt_tokens},
            "output": {"text": "" if failed else output, "tokens": 0 if failed else 18,
                       "finish_reason": "error" if failed else "stop",
                       "mean_logprob": round(rng.gauss(-0.7, 0.1), 4)},
            "latency_ms": round(rng.lognormvariate(0, 0.4) * latency, 1),
            "status": "error" if failed else "ok",
            "attributes": {"language": rng.choice(("en", "en", "en", "de", "fr")), "channel": "web"},
        }
        if rng.random() < 0.3:
            record["feedback"] = {"score": 0.0 if refused else 1.0}
        yield Message(domain, orjson.dumps(record), None)


def produce(bootstrap_servers: str, topic: str, messages, linger_ms: int = 20) -> int:
    """Send messages keyed by domain; return how many were sent (all acknowledged)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=linger_ms,
                             batch_size=256 * 1024, acks="all")
    sent = 0
    try:
        futures = []
        for message in messages:
            key = message.domain.encode() if message.domain else None
            futures.append(producer.send(topic, key=key, value=message.value))
            sent += 1
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()
    return sent


# -- drift scenarios -----------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """The character of one domain's traffic for a while: what a drift scenario
    changes (prompt length, topic, a new finish reason, error rate ...)."""

    topic: str = "legal"
    tokens_median: float = 300.0
    tokens_sigma: float = 0.35            # lognormal
    latency_median_ms: float = 600.0
    error_rate: float = 0.01
    refusal_rate: float = 0.03
    finish: tuple = (("stop", 0.9), ("length", 0.1))
    feedback_rate: float = 0.3


class PromptPool:
    """`size` prompt texts per topic with the same sequence of lengths for every
    topic, so switching topic leaves `prompt_chars` exactly as it was; records
    draw texts from the pool (which also lets an embedding cache do its work)."""

    def __init__(self, size: int = 1000, chars_median: float = 400.0, chars_sigma: float = 0.3,
                 seed: int = 11):
        rng = random.Random(seed)
        self.lengths = [max(20, int(rng.lognormvariate(0.0, chars_sigma) * chars_median))
                        for _ in range(size)]
        self.seed = seed
        self._texts: dict[str, list[str]] = {}

    def texts(self, topic: str) -> list[str]:
        if topic not in self._texts:
            from monitor.synthetic_prompts import prompt

            rng = random.Random(f"{self.seed}:{topic}")
            self._texts[topic] = [prompt(rng, topic, n) for n in self.lengths]
        return self._texts[topic]


def shaped_record(rng: random.Random, domain: str, t: float, shape: Shape, text: str | None,
                  index: int = 0) -> dict:
    """One schema-v1 record of `domain` at event time `t` with the character `shape`."""
    tokens = max(1, int(rng.lognormvariate(0.0, shape.tokens_sigma) * shape.tokens_median))
    failed = rng.random() < shape.error_rate
    refused = not failed and rng.random() < shape.refusal_rate
    u, finish = rng.random(), shape.finish[-1][0]
    for name, share in shape.finish:
        if u < share:
            finish = name
            break
        u -= share
    output = "I'm sorry, but I can't help with that." if refused else "Here is the answer."
    record = {
        "schema_version": 1, "request_id": f"{domain}-{index:09x}", "timestamp": int(t * 1000),
        "domain": domain, "model": {"base": "tiny-llama", "kind": "lora", "version": "v1"},
        "input": {"tokens": tokens},
        "output": {"text": "" if failed else output, "tokens": 0 if failed else 24,
                   "finish_reason": "error" if failed else finish,
                   "mean_logprob": round(rng.gauss(-0.7, 0.1), 4)},
        "latency_ms": round(rng.lognormvariate(0.0, 0.4) * shape.latency_median_ms, 1),
        "status": "error" if failed else "ok",
    }
    if text is not None:
        record["input"]["text"] = text
    if rng.random() < shape.feedback_rate:
        record["feedback"] = {"score": 0.0 if refused or failed else 1.0}
    return record


def scenario(shapes: dict[str, Shape], start: float, seconds: float, rate: float = 1.0,
             seed: int = 3, changes: dict[str, list[tuple[float, Shape]]] | None = None,
             pool: PromptPool | None = None) -> Iterator[bytes]:
    """Records of every domain in `shapes`, `rate` per second per domain, in time
    order from `start` for `seconds`; `changes[domain]` lists (time, new shape)
    switches. With a `pool`, prompts carry text drawn from it (by topic)."""
    rng = random.Random(seed)
    names = sorted(shapes)
    current = dict(shapes)
    pending = {d: sorted(changes.get(d, []), key=lambda c: c[0]) for d in names} if changes else {}
    for i in range(int(seconds * rate)):
        t = start + i / rate
        for k, domain in enumerate(names):
            queue = pending.get(domain)
            while queue and queue[0][0] <= t:
                current[domain] = queue.pop(0)[1]
            shape = current[domain]
            text = rng.choice(pool.texts(shape.topic)) if pool is not None else None
            when = t + k / (rate * len(names))
            yield orjson.dumps(shaped_record(rng, domain, when, shape, text, i))
