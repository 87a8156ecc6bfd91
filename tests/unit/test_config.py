"""Unit tests of monitor.config.load_config: defaults < file < environment (DESIGN.md §8)."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import SecretStr

from monitor.config import Config, load_config
from monitor.errors import ConfigError


def write(tmp_path, text: str, name: str = "monitor.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path, environ=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={} if environ is None else environ)
    return info.value.problems


# -- defaults ------------------------------------------------------------------

def test_no_file_and_empty_environment_give_the_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # load_config(None) looks for ./monitor.yaml

    config = load_config(None, environ={})

    assert isinstance(config, Config)
    assert config.kafka.topic == "inference-logs"
    assert config.kafka.dead_letter_topic == "inference-logs.dlq"
    assert config.kafka.bootstrap_servers == ["127.0.0.1:9092"]
    assert config.http.address == "127.0.0.1:9464"
    assert (config.http.host, config.http.port) == ("127.0.0.1", 9464)
    assert config.http.api_token is None
    assert config.windows.bucket_seconds == 60
    assert config.windows.length_seconds == 900
    assert config.state.url == "sqlite:///monitor-state.db"


def test_monitor_yaml_in_the_working_directory_is_read_when_no_path_is_given(tmp_path, monkeypatch):
    write(tmp_path, """
        kafka:
          topic: from-cwd
    """)
    monkeypatch.chdir(tmp_path)

    assert load_config(None, environ={}).kafka.topic == "from-cwd"


def test_empty_file_gives_the_defaults(tmp_path):
    path = write(tmp_path, "")

    assert load_config(path, environ={}) == Config()


def test_file_with_only_comments_gives_the_defaults(tmp_path):
    path = write(tmp_path, "# nothing here\n")

    assert load_config(path, environ={}) == Config()


# -- file and environment ------------------------------------------------------

def test_yaml_file_overrides_the_defaults(tmp_path):
    path = write(tmp_path, """
        kafka:
          topic: prod-logs
          bootstrap_servers: [k1:9092, k2:9092]
        state:
          url: sqlite:///tmp/x.db
          flush_interval_seconds: 0.25
        windows:
          bucket_seconds: 30
          length_seconds: 600
        http:
          address: 0.0.0.0:9000
    """)

    config = load_config(path, environ={})

    assert config.kafka.topic == "prod-logs"
    assert config.kafka.dead_letter_topic == "prod-logs.dlq"
    assert config.kafka.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert config.state.url == "sqlite:///tmp/x.db"
    assert config.state.flush_interval_seconds == 0.25
    assert (config.windows.bucket_seconds, config.windows.length_seconds) == (30, 600)
    assert (config.http.host, config.http.port) == ("0.0.0.0", 9000)
    # untouched sections keep their defaults
    assert config.kafka.group == "lora-monitor"
    assert config.windows.allowed_lateness_seconds == 300


def test_explicit_dlq_topic_overrides_the_derived_dead_letter_topic(tmp_path):
    path = write(tmp_path, """
        kafka:
          dlq_topic: rejects
    """)

    assert load_config(path, environ={}).kafka.dead_letter_topic == "rejects"


def test_bootstrap_servers_as_a_comma_separated_string_in_the_file_splits(tmp_path):
    path = write(tmp_path, """
        kafka:
          bootstrap_servers: "a:1, b:2"
    """)

    assert load_config(path, environ={}).kafka.bootstrap_servers == ["a:1", "b:2"]


def test_environment_variables_override_the_file(tmp_path):
    path = write(tmp_path, """
        kafka:
          topic: from-file
          group: file-group
        state:
          url: sqlite:///file.db
        http:
          address: 127.0.0.1:1111
    """)
    environ = {
        "MONITOR_KAFKA_TOPIC": "from-env",
        "MONITOR_KAFKA_GROUP": "env-group",
        "MONITOR_STATE_URL": "sqlite:///env.db",
        "MONITOR_HTTP_ADDRESS": "127.0.0.1:2222",
    }

    config = load_config(path, environ=environ)

    assert config.kafka.topic == "from-env"
    assert config.kafka.dead_letter_topic == "from-env.dlq"
    assert config.kafka.group == "env-group"
    assert config.state.url == "sqlite:///env.db"
    assert config.http.port == 2222


def test_environment_variables_override_the_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    config = load_config(None, environ={"MONITOR_KAFKA_TOPIC": "t2"})

    assert config.kafka.topic == "t2"


def test_empty_environment_variable_is_ignored(tmp_path):
    path = write(tmp_path, """
        kafka:
          topic: from-file
    """)

    assert load_config(path, environ={"MONITOR_KAFKA_TOPIC": ""}).kafka.topic == "from-file"


def test_unrelated_environment_variables_are_ignored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    config = load_config(None, environ={"MONITOR_UNKNOWN": "x", "PATH": "/bin"})

    assert config == Config()


def test_bootstrap_servers_from_the_environment_split_into_a_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    config = load_config(None, environ={"MONITOR_KAFKA_BOOTSTRAP_SERVERS": "a:1,b:2"})

    assert config.kafka.bootstrap_servers == ["a:1", "b:2"]


def test_bootstrap_servers_from_the_environment_drop_blanks_and_spaces(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    config = load_config(None, environ={"MONITOR_KAFKA_BOOTSTRAP_SERVERS": " a:1 , ,b:2,"})

    assert config.kafka.bootstrap_servers == ["a:1", "b:2"]


def test_http_address_with_port_zero_is_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    config = load_config(None, environ={"MONITOR_HTTP_ADDRESS": "127.0.0.1:0"})

    assert config.http.port == 0


def test_bad_value_from_the_environment_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"MONITOR_HTTP_ADDRESS": "nowhere"})

    assert info.value.problems == [
        "http.address (from MONITOR_HTTP_ADDRESS): must be host:port, for example 127.0.0.1:9464"]


# -- secrets -------------------------------------------------------------------

def test_api_token_from_the_environment_is_a_secret_str_hidden_from_repr(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    config = load_config(None, environ={"MONITOR_API_TOKEN": "s3cr3t-t0ken"})

    assert isinstance(config.http.api_token, SecretStr)
    assert config.http.api_token.get_secret_value() == "s3cr3t-t0ken"
    assert "s3cr3t-t0ken" not in repr(config)
    assert "s3cr3t-t0ken" not in str(config)
    assert "s3cr3t-t0ken" not in config.model_dump_json()


def test_kafka_sasl_credentials_from_the_environment_are_secret(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    config = load_config(None, environ={"MONITOR_KAFKA_SASL_USERNAME": "alice",
                                        "MONITOR_KAFKA_SASL_PASSWORD": "hunter2"})

    assert config.kafka.sasl_username.get_secret_value() == "alice"
    assert config.kafka.sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(config)


def test_api_token_in_the_file_is_refused_naming_the_environment_variable(tmp_path):
    path = write(tmp_path, """
        http:
          api_token: do-not-put-me-here
    """)

    problems = problems_of(path)

    assert len(problems) == 1
    assert problems[0].startswith("http.api_token")
    assert "MONITOR_API_TOKEN" in problems[0]
    assert "do-not-put-me-here" not in problems[0]


def test_sasl_password_in_the_file_is_refused_naming_the_environment_variable(tmp_path):
    path = write(tmp_path, """
        kafka:
          sasl_password: hunter2
    """)

    problems = problems_of(path)

    assert len(problems) == 1 and "MONITOR_KAFKA_SASL_PASSWORD" in problems[0]


def test_secret_in_the_file_is_refused_even_when_the_environment_also_sets_it(tmp_path):
    path = write(tmp_path, """
        http:
          api_token: in-file
    """)

    problems = problems_of(path, environ={"MONITOR_API_TOKEN": "in-env"})

    assert any("MONITOR_API_TOKEN" in p for p in problems)


# -- errors --------------------------------------------------------------------

def test_every_error_in_a_file_is_reported_at_once_with_path_and_line(tmp_path):
    path = write(tmp_path, """
        kafka:
          topic: [not, a, string]
          max_poll_records: 0
        windows:
          bucket_seconds: 0
          length_seconds: -5
        http:
          address: nowhere
    """)

    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    problems = info.value.problems

    assert len(problems) == 5
    assert any(p.startswith("kafka.topic (line 2): ") for p in problems)
    assert any(p.startswith("kafka.max_poll_records (line 3): ") for p in problems)
    assert "windows.bucket_seconds (line 5): Input should be greater than 0" in problems
    assert "windows.length_seconds (line 6): Input should be greater than 0" in problems
    assert "http.address (line 8): must be host:port, for example 127.0.0.1:9464" in problems
    # the message lists them all, and names the file
    message = str(info.value)
    assert str(path) in message and "5 error(s)" in message
    assert all(p in message for p in problems)
    assert info.value.source == str(path)


def test_unknown_field_is_reported_as_unknown_field_with_its_line(tmp_path):
    path = write(tmp_path, """
        kafka:
          topic: ok
          topik: typo
    """)

    assert problems_of(path) == ["kafka.topik (line 3): unknown field"]


def test_unknown_top_level_section_is_reported_as_unknown_field(tmp_path):
    path = write(tmp_path, """
        kafak:
          topic: typo
    """)

    assert problems_of(path) == ["kafak (line 1): unknown field"]


def test_invalid_yaml_reports_the_line(tmp_path):
    path = write(tmp_path, """
        kafka:
          topic: x
         bad: [
    """)

    problems = problems_of(path)

    assert len(problems) == 1
    assert problems[0].startswith("not valid YAML (line 3, column ")


def test_top_level_that_is_not_a_mapping_is_an_error(tmp_path):
    path = write(tmp_path, "- a\n- b\n")

    assert problems_of(path) == ["the top level must be a mapping, got list"]


def test_section_that_is_not_a_mapping_is_an_error_with_its_line(tmp_path):
    path = write(tmp_path, """
        state:
          url: sqlite://
        kafka: hello
    """)

    problems = problems_of(path)

    assert len(problems) == 1 and problems[0].startswith("kafka (line 3): ")


def test_missing_file_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as info:
        load_config(missing, environ={})

    assert info.value.source == str(missing)
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith("cannot read")


def test_directory_instead_of_a_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_config(tmp_path, environ={})


def test_length_seconds_not_a_multiple_of_bucket_seconds_is_an_error(tmp_path):
    path = write(tmp_path, """
        windows:
          bucket_seconds: 60
          length_seconds: 100
    """)

    problems = problems_of(path)

    assert len(problems) == 1
    assert problems[0] == "windows.length_seconds (line 3): must be a multiple of bucket_seconds (60)"


def test_refusal_pattern_that_does_not_compile_is_an_error(tmp_path):
    path = write(tmp_path, """
        quality:
          refusal_patterns: ["(unclosed"]
    """)

    problems = problems_of(path)

    assert len(problems) == 1 and problems[0].startswith("quality.refusal_patterns (line 2): ")
    assert "does not compile" in problems[0]


@pytest.mark.parametrize("quantile", [0, 1, 1.5, -0.1])
def test_latency_quantiles_outside_the_open_unit_interval_are_errors(tmp_path, quantile):
    path = write(tmp_path, f"""
        quality:
          latency_quantiles: [0.5, {quantile}]
    """)

    problems = problems_of(path)

    assert len(problems) == 1 and "strictly between 0 and 1" in problems[0]


@pytest.mark.parametrize("address", ["9464", "localhost:", "host:port", "127.0.0.1:65536", ":-1"])
def test_http_address_without_a_valid_port_is_an_error(tmp_path, address):
    path = write(tmp_path, f"""
        http:
          address: "{address}"
    """)

    problems = problems_of(path)

    assert len(problems) == 1 and problems[0].startswith("http.address (line 2): ")


def test_auto_offset_reset_must_be_earliest_or_latest(tmp_path):
    path = write(tmp_path, """
        kafka:
          auto_offset_reset: sometimes
    """)

    problems = problems_of(path)

    assert len(problems) == 1 and problems[0].startswith("kafka.auto_offset_reset (line 2): ")


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# -- bugs ----------------------------------------------------------------------

def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "monitor.yaml"
    path.write_bytes(b"kafka:\n  topic: \xff\xfe\n")

    with pytest.raises(ConfigError):
        load_config(path, environ={})


def test_section_given_as_the_name_of_a_secret_is_a_config_error(tmp_path):
    path = write(tmp_path, "http: api_token\n")

    with pytest.raises(ConfigError):
        load_config(path, environ={})


def test_section_given_as_a_list_holding_a_secret_name_is_a_config_error(tmp_path):
    path = write(tmp_path, "kafka:\n  - sasl_password\n")

    with pytest.raises(ConfigError):
        load_config(path, environ={})


# -- later additions to the schema ---------------------------------------------

def test_fetcher_defaults_to_a_child_process_and_accepts_inline(tmp_path):
    assert Config().kafka.fetcher == "process"
    path = write(tmp_path, """
        kafka:
          fetcher: inline
    """)

    assert load_config(path, environ={}).kafka.fetcher == "inline"


def test_unknown_fetcher_is_an_error(tmp_path):
    path = write(tmp_path, """
        kafka:
          fetcher: threads
    """)

    problems = problems_of(path)

    assert len(problems) == 1 and problems[0].startswith("kafka.fetcher (line 2): ")


def test_refusal_scan_chars_must_be_positive(tmp_path):
    path = write(tmp_path, """
        quality:
          refusal_scan_chars: 0
    """)

    assert problems_of(path) == ["quality.refusal_scan_chars (line 2): Input should be greater than 0"]
