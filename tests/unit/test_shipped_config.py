"""The monitor.yaml shipped at the repository root documents the defaults: it
must load and say exactly what the embedded defaults say."""

from pathlib import Path

from monitor.config import Config, load_config

SHIPPED = Path(__file__).resolve().parents[2] / "monitor.yaml"


def test_shipped_monitor_yaml_loads_and_equals_the_embedded_defaults():
    assert load_config(SHIPPED, environ={}) == Config()


def test_shipped_monitor_yaml_names_every_setting():
    text = SHIPPED.read_text()
    for section, model in Config.model_fields.items():
        assert f"\n{section}:" in text, section
        for field, info in model.annotation.model_fields.items():
            if not info.exclude:
                assert f"  {field}:" in text, f"{section}.{field}"
