"""Schema v1 as msgspec Structs: the fast path of `monitor.records.decode`.

msgspec parses and type-checks a record in one pass in C. Anything it does
not accept goes to the orjson path in `monitor.records`, which finds the
exact reason and message; a hypothesis test holds the two paths to the same
verdict and the same fields on every input (tests/unit/test_records_fuzz.py).
Checks msgspec cannot express (timestamp format, domain pattern, "input.text
or input.tokens") run after it, in `monitor.records`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

import msgspec

# Must match monitor.records.MAX_MAGNITUDE (a unit test checks it).
MAX_MAGNITUDE = 1e9

# Integers beyond 64 bits, which orjson reads as floats (then: bad_type), are
# sent to the orjson path by monitor.records (msgspec bounds stop at int64).
Count = Annotated[int, msgspec.Meta(ge=0)]
Bounded = Annotated[float, msgspec.Meta(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
Latency = Annotated[float, msgspec.Meta(ge=0, le=MAX_MAGNITUDE)]


class InputV1(msgspec.Struct):
    text: Optional[str] = None
    tokens: Optional[Count] = None


class OutputV1(msgspec.Struct):
    text: Optional[str] = None
    tokens: Optional[Count] = None
    finish_reason: Optional[str] = None
    mean_logprob: Optional[Bounded] = None


class ModelV1(msgspec.Struct):
    base: object = None  # not used; any value is accepted, as in the orjson path
    kind: Optional[str] = None
    version: Optional[str] = None


class FeedbackV1(msgspec.Struct):
    score: Optional[Bounded] = None


class RecordV1(msgspec.Struct):
    schema_version: Literal[1]
    timestamp: Union[str, int, float]
    domain: str
    input: InputV1
    request_id: Optional[str] = None
    model: Optional[ModelV1] = None
    output: Optional[OutputV1] = None
    latency_ms: Optional[Latency] = None
    status: Optional[str] = None
    feedback: Optional[FeedbackV1] = None
    attributes: Optional[dict[str, Union[str, int, float, bool, None]]] = None


decode_struct = msgspec.json.Decoder(RecordV1).decode
