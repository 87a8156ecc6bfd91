"""Configuration: `monitor.yaml`, environment variables and embedded defaults.

Parsed once, at the edge, into typed objects. Every problem is reported at
once with its path in the file (and the line where the file has one):

    monitor.yaml: 2 error(s)
      kafka.topic (line 3): Input should be a valid string
      windows.bucket_seconds (line 9): Input should be greater than 0

Precedence: embedded defaults < config file < environment variables.
Secrets (API token, Kafka SASL password) come from the environment only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from monitor.errors import ConfigError

DEFAULT_CONFIG_FILE = "monitor.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Section):
    bootstrap_servers: list[str] = ["127.0.0.1:9092"]
    topic: str = "inference-logs"
    group: str = "lora-monitor"
    dlq_topic: str | None = Field(None, description="default: <topic>.dlq")
    client_id: str = "lora-monitor"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_records: int = Field(5000, gt=0)
    session_timeout_ms: int = Field(10000, gt=0)
    heartbeat_interval_ms: int = Field(3000, gt=0)
    create_dlq_topic: bool = True
    # "process": kafka-python runs in a child process, on another core than the
    # pipeline (faster); "inline": one process (simpler to debug).
    fetcher: Literal["process", "inline"] = "process"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    ssl_cafile: str | None = None
    # From MONITOR_KAFKA_SASL_USERNAME / MONITOR_KAFKA_SASL_PASSWORD only.
    sasl_username: SecretStr | None = Field(None, exclude=True)
    sasl_password: SecretStr | None = Field(None, exclude=True)

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"


class StateConfig(_Section):
    url: str = "sqlite:///monitor-state.db"
    flush_interval_seconds: float = Field(1.0, gt=0)
    flush_max_records: int = Field(50000, gt=0)


class HttpConfig(_Section):
    address: str = "127.0.0.1:9464"
    # From MONITOR_API_TOKEN only; mutating endpoints are off without it.
    api_token: SecretStr | None = Field(None, exclude=True)

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("must be host:port, for example 127.0.0.1:9464")
        return value

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


class WindowConfig(_Section):
    bucket_seconds: int = Field(60, gt=0)
    length_seconds: int = Field(900, gt=0)
    allowed_lateness_seconds: int = Field(300, ge=0)
    max_domains: int = Field(1000, gt=0)
    max_future_seconds: float = Field(300, ge=0, description="event time allowed ahead of the clock")

    @field_validator("length_seconds")
    @classmethod
    def _whole_buckets(cls, value: int, info: ValidationInfo) -> int:
        bucket = info.data.get("bucket_seconds")
        if bucket and value % bucket:
            raise ValueError(f"must be a multiple of bucket_seconds ({bucket})")
        return value


class RecordConfig(_Section):
    max_bytes: int = Field(1_048_576, gt=0)


class QualityConfig(_Section):
    # Case-insensitive phrases searched for in the start of each output: cheap
    # (a substring search), so they are the default way to spot refusals.
    refusal_phrases: list[str] = [
        "i can't help", "i cannot help", "i can't assist", "i cannot assist",
        "i'm sorry, but", "i am sorry, but", "i'm unable to", "i am unable to",
        "as an ai", "i won't be able to",
    ]
    # Regular expressions (case-insensitive) for what phrases cannot say; each
    # record then costs a regex search, a few microseconds.
    refusal_patterns: list[str] = []
    refusal_scan_chars: int = Field(160, gt=0, description="output characters searched")
    latency_quantiles: list[float] = [0.5, 0.9, 0.95, 0.99]

    @field_validator("refusal_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        import re

        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from None
        return patterns

    @field_validator("latency_quantiles")
    @classmethod
    def _in_unit_interval(cls, values: list[float]) -> list[float]:
        if any(not 0 < q < 1 for q in values):
            raise ValueError("quantiles must lie strictly between 0 and 1")
        return values


# The built-in features (DESIGN.md §3); `attributes.<name>` for each configured
# attribute is categorical too. Kept here, not in monitor.features, so config
# validation does not import the feature code.
NUMERIC_FEATURES = ("prompt_tokens", "prompt_chars", "output_tokens", "latency_seconds",
                    "mean_logprob", "feedback_score")
CATEGORICAL_FEATURES = ("finish_reason", "status")
EMBEDDING_FEATURE = "embedding"


# Marks a validator message that lists several problems, each with its own path.
PROBLEMS = "problems:\n"


class DriftRule(_Section):
    """How one feature (or every feature of a domain) decides drift; unset keys inherit."""

    effect: str | None = Field(None, description="method whose score must pass `threshold`")
    test: str | None = Field(None, description="method whose BH-adjusted p-value must be < alpha")
    threshold: float | None = Field(None, gt=0)
    alpha: float | None = Field(None, gt=0, lt=1)
    min_samples: int | None = Field(None, gt=0)


class DomainDriftRule(DriftRule):
    features: dict[str, DriftRule] = {}


class EmbeddingConfig(_Section):
    enabled: bool = True
    texts_per_bucket: int = Field(8, gt=0, description="prompt texts sampled per bucket")
    reference_texts: int = Field(256, gt=1)
    max_chars: int = Field(512, gt=0, description="each sampled prompt is cut to this")
    min_texts: int = Field(50, gt=1, description="fewer texts in the window: no decision")
    batch_size: int = Field(32, gt=0)
    threads: int = Field(1, gt=0, description="torch threads of the daemon's embedding worker")
    permutations: int = Field(1000, gt=0, description="at least; more when many tests share BH")
    max_permutations: int = Field(20000, gt=0)


class DriftConfig(_Section):
    enabled: bool = True
    reference_records: int = Field(5000, gt=1, description="first N accepted records of a domain")
    reference_sample: int = Field(2000, gt=1, description="raw values kept per numeric feature")
    evaluation_interval_seconds: float = Field(60, gt=0)
    min_samples: int = Field(500, gt=0)
    alpha: float = Field(0.05, gt=0, lt=1)
    bins: int = Field(10, ge=2, le=100, description="reference-quantile bins per numeric feature")
    max_categories: int = Field(32, gt=0, description="per feature; the rest count as __other__")
    reservoir_per_bucket: int = Field(64, gt=0)
    attributes: list[str] = []
    thresholds: dict[str, float] = {}
    decision: dict[str, DriftRule] = {
        "numeric": DriftRule(effect="psi", test="ks"),
        "categorical": DriftRule(effect="psi", test="chi2"),
        "embedding": DriftRule(effect="mmd", test="mmd"),
    }
    features: dict[str, DriftRule] = {}
    domains: dict[str, DomainDriftRule] = {}
    embeddings: EmbeddingConfig = EmbeddingConfig()

    def feature_type(self, feature: str) -> str | None:
        if feature in NUMERIC_FEATURES:
            return "numeric"
        if feature in CATEGORICAL_FEATURES or (feature.startswith("attributes.")
                                                and feature[11:] in self.attributes):
            return "categorical"
        if feature == EMBEDDING_FEATURE:
            return "embedding"
        return None

    @model_validator(mode="after")
    def _known_names(self):
        from monitor.drift import METHODS

        problems: list[tuple[tuple, str]] = []  # (path below `drift`, message)
        for method, value in self.thresholds.items():
            if method not in METHODS:
                problems.append((("thresholds", method),
                                 f"unknown method (one of {', '.join(METHODS)})"))
            elif not value > 0:
                problems.append((("thresholds", method), "must be > 0"))
        for kind in self.decision:
            if kind not in ("numeric", "categorical", "embedding"):
                problems.append((("decision", kind), "must be numeric, categorical or embedding"))

        def check(rule: DriftRule, where: tuple, kinds: tuple[str, ...]):
            for role in ("effect", "test"):
                name = getattr(rule, role)
                if name is None:
                    continue
                method = METHODS.get(name)
                if method is None:
                    problems.append((where + (role,), f"unknown method {name!r} "
                                                      f"(one of {', '.join(METHODS)})"))
                    continue
                wrong = [k for k in kinds if k not in method.feature_types]
                if wrong:
                    problems.append((where + (role,),
                                     f"{name} does not apply to {wrong[0]} features"))
                if role == "test" and not method.has_pvalue:
                    problems.append((where + ("test",), f"{name} has no p-value"))

        for kind, rule in self.decision.items():
            if kind in ("numeric", "categorical", "embedding"):
                check(rule, ("decision", kind), (kind,))

        def features(rules: dict, prefix: tuple):
            for feature, rule in rules.items():
                kind = self.feature_type(feature)
                if kind is None:
                    problems.append((prefix + (feature,), "unknown feature (built-in: "
                                     f"{', '.join(NUMERIC_FEATURES + CATEGORICAL_FEATURES)}, "
                                     "embedding, or attributes.<name> listed in drift.attributes)"))
                else:
                    check(rule, prefix + (feature,), (kind,))

        features(self.features, ("features",))
        for domain, rule in self.domains.items():
            check(rule, ("domains", domain), ())
            features(rule.features, ("domains", domain, "features"))
        if problems:
            # load_config turns each into "drift.<path> (line N): message".
            raise ValueError(PROBLEMS + "\n".join("\x1f".join(path) + "\t" + message
                                                   for path, message in problems))
        return self


class RulesConfig(_Section):
    """Alerting and recording rules (docs/rules.md)."""
    # Files, or folders whose *.yml / *.yaml files are read (not recursively, so
    # rules/tests/ is not loaded). `--rules PATH` overrides it.
    paths: list[str] = ["rules/"]
    evaluation_interval_seconds: float = Field(60.0, gt=0)  # groups without `interval:`
    retention_seconds: float = Field(3600.0, gt=0)          # series store (range functions)
    max_series: int = Field(200_000, gt=0)                  # series store; new series beyond: dropped

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path(cls, value):
        return [value] if isinstance(value, str) else value


class AlertingConfig(_Section):
    """Where firing alerts go (docs/rules.md#delivery)."""
    alertmanagers: list[str] = []       # base URLs, e.g. http://127.0.0.1:9093
    webhooks: list[str] = []            # URLs receiving Alertmanager's webhook payload (v4)
    # Base of each alert's generatorURL; null: http://<http.address>.
    external_url: str | None = None
    resend_delay_seconds: float = Field(60.0, ge=0)   # firing alerts are re-sent this often
    queue_capacity: int = Field(10_000, gt=0)         # alerts waiting; the oldest are dropped
    timeout_seconds: float = Field(10.0, gt=0)
    max_backoff_seconds: float = Field(60.0, gt=0)

    @field_validator("alertmanagers", "webhooks")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            _check_url(url)
        return value

    @field_validator("external_url")
    @classmethod
    def _external(cls, value: str | None) -> str | None:
        # Alertmanager refuses a whole batch whose generatorURL is not a URL.
        return _check_url(value) if value else value


def _check_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return url


class RegistryConfig(_Section):
    """The adapter registry (docs/registry.md)."""
    # `--registry PATH` overrides it; a missing default file means "no registry".
    path: str = "adapters/registry.yaml"


class EvalConfig(_Section):
    """Golden-set evaluation (docs/evaluation.md)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"        # auto: cuda when available
    max_batch_tokens: int = Field(16384, gt=0)             # padded tokens per batch (halved on OOM)
    threads: int | None = Field(None, gt=0)                # CPU threads of torch (None: all cores)
    confidence: float = Field(0.95, gt=0, lt=1)            # of the paired intervals
    nll_margin: float = Field(0.0, ge=0)                   # tolerated NLL increase (nats/token)
    exact_match_margin: float = Field(0.0, ge=0)           # tolerated exact-match drop (share)
    bootstrap_resamples: int = Field(10_000, ge=1000)
    compare_with_base: bool = True                         # also compare with the base model


class ServingHookConfig(_Section):
    """Told of every change of a domain's active version (docs/actions.md)."""
    url: str | None = None                                  # None: no serving hook
    preset: Literal["generic", "vllm"] = "generic"          # vllm: its dynamic LoRA endpoints
    timeout_seconds: float = Field(10.0, gt=0)
    # The bearer token comes from MONITOR_SERVING_HOOK_TOKEN, never from the file.
    token: SecretStr | None = Field(None, exclude=True)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value) if value else None


class RetrainConfig(_Section):
    """Where retrain requests go and what they carry (docs/actions.md)."""
    topic: str | None = "retrain-requests"                  # None: no topic
    webhook: str | None = None                              # POSTed the request as JSON
    command: list[str] = []                                 # run with the request on stdin
    snapshot_dir: str = "retrain-snapshots"                 # JSONL snapshots of recent records
    snapshot_records: int = Field(1000, gt=0)               # per domain, kept in memory

    @field_validator("webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value) if value else None


class ActionsConfig(_Section):
    """Actions taken when an alert with an `action` label fires (docs/actions.md)."""
    enabled: bool = True
    dry_run: bool = False                                   # record what would happen, change nothing
    cooldown_seconds: float = Field(3600.0, ge=0)           # per domain and action
    control_topic: str | None = "adapter-control"           # None: no control events on Kafka
    create_topics: bool = True                              # create the control and retrain topics
    serving_hook: ServingHookConfig = ServingHookConfig()
    retrain: RetrainConfig = RetrainConfig()


class Config(_Section):
    kafka: KafkaConfig = KafkaConfig()
    state: StateConfig = StateConfig()
    http: HttpConfig = HttpConfig()
    windows: WindowConfig = WindowConfig()
    records: RecordConfig = RecordConfig()
    quality: QualityConfig = QualityConfig()
    drift: DriftConfig = DriftConfig()
    rules: RulesConfig = RulesConfig()
    alerting: AlertingConfig = AlertingConfig()
    registry: RegistryConfig = RegistryConfig()
    eval: EvalConfig = EvalConfig()
    actions: ActionsConfig = ActionsConfig()


# Environment variable -> (section, field). Secrets appear only here.
ENVIRONMENT = {
    "MONITOR_KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "MONITOR_KAFKA_TOPIC": ("kafka", "topic"),
    "MONITOR_KAFKA_GROUP": ("kafka", "group"),
    "MONITOR_KAFKA_SASL_USERNAME": ("kafka", "sasl_username"),
    "MONITOR_KAFKA_SASL_PASSWORD": ("kafka", "sasl_password"),
    "MONITOR_STATE_URL": ("state", "url"),
    "MONITOR_HTTP_ADDRESS": ("http", "address"),
    "MONITOR_API_TOKEN": ("http", "api_token"),
    "MONITOR_SERVING_HOOK_TOKEN": ("actions.serving_hook", "token"),
}
_SECRET_FIELDS = {("kafka", "sasl_username"), ("kafka", "sasl_password"), ("http", "api_token"),
                  ("actions.serving_hook", "token")}


def load_config(path: str | os.PathLike | None = None, environ: dict | None = None) -> Config:
    """Read the config file (or `./monitor.yaml` when present, else the defaults),
    apply environment overrides and validate; raise `ConfigError` listing every problem."""
    environ = os.environ if environ is None else environ
    source = "embedded defaults"
    data: dict = {}
    lines: dict[tuple, int] = {}
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"cannot read: {exc.strerror}"], source) from None
        except UnicodeDecodeError as exc:
            raise ConfigError([f"not UTF-8 text (byte {exc.start})"], source) from None
        data, lines = _parse_yaml(text, source)

    problems: list[str] = []
    for section, field in sorted(_SECRET_FIELDS):
        found = _section(data, section)
        if found is not None and field in found:
            env = next(k for k, v in ENVIRONMENT.items() if v == (section, field))
            problems.append(f"{section}.{field}: secrets are not read from files; set {env}")
            del found[field]
    for variable, (section, field) in ENVIRONMENT.items():
        if environ.get(variable):
            found = _section(data, section, create=True)
            if found is not None:
                found[field] = environ[variable]
                lines[(*section.split("."), field)] = f"from {variable}"
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            problems.extend(_describe(error, lines))
        config = None
    if problems:
        raise ConfigError(problems, source)
    return config


def _section(data: dict, dotted: str, create: bool = False) -> dict | None:
    """The mapping at `dotted` ("actions.serving_hook") in the file's data, or None
    when it is missing (made empty with `create`) or not a mapping."""
    for name in dotted.split("."):
        if create and name not in data:
            data[name] = {}
        data = data.get(name) if isinstance(data, dict) else None
        if not isinstance(data, dict):
            return None
    return data


def _parse_yaml(text: str, source: str) -> tuple[dict, dict]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError([f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"], source) from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError([f"the top level must be a mapping, got {type(data).__name__}"], source)
    lines: dict[tuple, int] = {}
    _collect_lines(node, (), lines)
    return data, lines


def _collect_lines(node, path: tuple, lines: dict) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            lines[child] = key.start_mark.line + 1
            _collect_lines(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            lines[path + (index,)] = value.start_mark.line + 1
            _collect_lines(value, path + (index,), lines)


def _describe(error: dict, lines: dict) -> list[str]:
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "field required"
    elif error["type"] == "extra_forbidden":
        message = "unknown field"
    if message.startswith(PROBLEMS):
        # A section validator reporting problems below it, each "path\tmessage".
        described = []
        for part in message[len(PROBLEMS):].split("\n"):
            sub, _, text = part.partition("\t")
            described.append(_locate(loc + tuple(sub.split("\x1f")), text, lines))
        return described
    return [_locate(loc, message, lines)]


def _locate(loc: tuple, message: str, lines: dict) -> str:
    path = ".".join(str(part) for part in loc) or "(top level)"
    where = ""
    for depth in range(len(loc), 0, -1):
        if loc[:depth] in lines:
            found = lines[loc[:depth]]
            where = f" ({found})" if isinstance(found, str) else f" (line {found})"
            break
    return f"{path}{where}: {message}"
