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
            "input": {"text": "q" * min(prompt_tokens * 4, 200), "tokens": prompt_tokens},
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
