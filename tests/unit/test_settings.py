"""Settings precedence and checking: flag > FSM_<KEY> > settings file > config `settings:` > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import DEFAULT_STORE, load_settings
from fsm.errors import InvalidDefinition


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert settings.store == [DEFAULT_STORE]
    assert settings.lease_timeout == 960 and settings.lease_timeout > 900
    assert settings.stream == [] and settings.metrics["target"] == "none"


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    config = {"store": "redis://config:6379/0", "lease_timeout": 100, "max_local_hops": 7, "resend_after": 9}
    file = tmp_path / "settings.yaml"
    file.write_text("store: [redis://file:6379/0, memcached://file:11211]\nlease_timeout: 200\n"
                    "max_local_hops: 8\n")
    env = {"FSM_STORE": "redis://env:6379/0,memory://", "FSM_LEASE_TIMEOUT": "300"}
    settings = load_settings(config, str(file), environ=env, lease_timeout=400)
    assert settings.lease_timeout == 400                       # flag
    assert settings.store == ["redis://env:6379/0", "memory://"]  # environment, comma-separated
    assert settings.max_local_hops == 8                        # settings file
    assert settings.resend_after == 9                          # config file
    assert settings.history_retention_days == 0                # default


def test_settings_file_from_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "s.yaml"
    file.write_text("settings:\n  stream: arn:aws:sqs:us-east-1:123456789012:q\n")
    settings = load_settings({}, environ={"FSM_SETTINGS": str(file)})
    assert settings.stream == ["arn:aws:sqs:us-east-1:123456789012:q"]   # a single string is a list of one


def test_mappings_from_the_environment_are_json() -> None:
    settings = load_settings({}, environ={"FSM_AWS": '{"connect_timeout": 1}',
                                          "FSM_METRICS": '{"target": "emf"}'})
    assert settings.aws == {"connect_timeout": 1}
    assert settings.metrics == {"target": "emf", "namespace": "lambda-fsm"}


@pytest.mark.parametrize("values, words", [
    ({"stor": "memory://"}, ["unknown settings key 'stor'", "did you mean 'store'"]),
    ({"lease_timeout": "soon"}, ["'lease_timeout' must be a number"]),
    ({"lease_timeout": -1}, ["must be 0 or more"]),
    ({"store": [1]}, ["'store' must be a URL/ARN or a list of them"]),
    ({"metrics": {"target": "statsd"}}, ["metrics.target must be one of none, cloudwatch, emf"]),
])
def test_bad_settings_are_named(values: dict, words: list[str]) -> None:
    with pytest.raises(InvalidDefinition) as caught:
        load_settings(values, environ={})
    for word in words:
        assert word in str(caught.value)


def test_bad_environment_mapping_is_named() -> None:
    with pytest.raises(InvalidDefinition, match="FSM_AWS must be a JSON object"):
        load_settings({}, environ={"FSM_AWS": "connect_timeout=1"})


def test_missing_settings_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidDefinition, match="cannot read settings file"):
        load_settings({}, str(tmp_path / "nope.yaml"), environ={})
