"""Per-record quality flags and the window-level quality signals built from them.

A record is an *error* when its `status` is present and not "ok"; a *refusal*
when the start of its output text (`scan_chars`, default 160) contains one of
the configured phrases (case-insensitive) or matches one of the patterns; *empty* when it
has an output whose text is "" or whose token count is 0.

>>> judge = QualityJudge([r"\\bI can't help"])
>>> from monitor.records import decode
>>> r = decode(b'{"schema_version":1,"timestamp":0,"domain":"d","input":{"tokens":1},'
...            b'"status":"ok","output":{"text":"Sorry, I can\\'t help with that"}}')
>>> judge.flags(r)
(False, True, True, False)
"""

from __future__ import annotations

import re

# Label values of monitor_quality{signal}.
SIGNALS = ("error_ratio", "refusal_ratio", "empty_output_ratio", "mean_logprob", "feedback_mean")

# Refusals announce themselves in the first sentence; scanning a bounded prefix
# keeps the cost per record flat however long the outputs are.
DEFAULT_SCAN_CHARS = 160


class QualityJudge:
    """Holds the refusal phrases and patterns; `flags(record)` classifies one record."""

    def __init__(self, refusal_patterns: list[str] = (), scan_chars: int = DEFAULT_SCAN_CHARS,
                 refusal_phrases: list[str] = ()):
        self._scan = scan_chars
        self._phrases = tuple(p.lower() for p in refusal_phrases if p)
        combined = "|".join(f"(?:{p})" for p in refusal_patterns)
        self._pattern = re.compile(combined, re.IGNORECASE).search if refusal_patterns else None

    def is_refusal(self, text: str) -> bool:
        head = text[:self._scan]
        lowered = head.lower()
        for phrase in self._phrases:
            if phrase in lowered:
                return True
        return self._pattern is not None and self._pattern(head) is not None

    def flags(self, record) -> tuple[bool, bool, bool, bool]:
        """(is_error, has_output, is_refusal, is_empty) for one record."""
        status = record.status
        is_error = status is not None and status != "ok"
        text = record.output_text
        tokens = record.output_tokens
        has_output = text is not None or tokens is not None
        if not has_output:
            return is_error, False, False, False
        is_refusal = bool(text) and self.is_refusal(text)
        is_empty = text == "" or tokens == 0
        return is_error, True, is_refusal, is_empty


def quality_signals(bucket) -> dict[str, float]:
    """The signals of a (merged) window bucket; a signal without data is left out."""
    signals = {}
    if bucket.count:
        signals["error_ratio"] = bucket.errors / bucket.count
    if bucket.with_output:
        signals["refusal_ratio"] = bucket.refusals / bucket.with_output
        signals["empty_output_ratio"] = bucket.empty / bucket.with_output
    if bucket.logprob_n:
        signals["mean_logprob"] = bucket.logprob_sum / bucket.logprob_n
    if bucket.feedback_n:
        signals["feedback_mean"] = bucket.feedback_sum / bucket.feedback_n
    return signals
