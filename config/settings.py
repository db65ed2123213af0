"""Settings: which backend plays which role, and the knobs of the protocol.

Precedence, highest first: a command-line flag, the environment variable ``FSM_<KEY>``
(lists comma-separated, mappings as JSON), the settings file (``--settings FILE`` or
``FSM_SETTINGS``), the config file's ``settings:`` mapping, the default. Nothing is
read at import time.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fsm.errors import InvalidDefinition

DEFAULT_STORE = "sqlite:///.fsm/fsm.sqlite3"
LIST_KEYS = ("store", "stream", "retry", "checkpoint", "dead_letter", "notify")
MAP_KEYS = ("endpoints", "aws", "metrics", "chaos")
NUMBER_KEYS = ("lease_timeout", "max_local_hops", "resend_after", "history_retention_days")


@dataclass
class Settings:
    store: list[str] = field(default_factory=lambda: [DEFAULT_STORE])
    stream: list[str] = field(default_factory=list)       # where messages go (SQS, Kinesis, SNS, DynamoDB)
    retry: list[str] = field(default_factory=list)        # delays: a standard SQS queue or a DynamoDB timer table
    checkpoint: list[str] = field(default_factory=list)   # Kinesis sequence numbers (DynamoDB table)
    dead_letter: list[str] = field(default_factory=list)  # malformed and failed messages
    notify: list[str] = field(default_factory=list)       # one small message per commit, for UIs
    endpoints: dict[str, str] = field(default_factory=dict)   # ARN -> endpoint URL override
    aws: dict[str, Any] = field(default_factory=dict)         # connect_timeout, read_timeout, max_attempts
    metrics: dict[str, Any] = field(default_factory=lambda: {"target": "none", "namespace": "lambda-fsm"})
    chaos: dict[str, float] = field(default_factory=dict)     # ARN/URL -> fault probability
    lease_timeout: float = 960.0   # above Lambda's 900 s maximum run time
    max_local_hops: int = 100
    resend_after: float = 60.0
    history_retention_days: float = 0.0

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply command-line flags (``None`` means not given)."""
        given = {k: _coerce(k, v, "command line") for k, v in overrides.items() if v is not None}
        return Settings(**{**self.__dict__, **given})


KEYS = tuple(f.name for f in fields(Settings))


def load_settings(config_settings: Mapping[str, Any] | None = None, settings_file: str | None = None,
                  environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    for source, values in (("config file `settings:`", config_settings or {}),
                           *_file_layer(settings_file or env.get("FSM_SETTINGS"))):
        merged.update(_checked(values, source))
    for key in KEYS:
        name = f"FSM_{key.upper()}"
        if env.get(name):
            merged[key] = _coerce(key, _from_env(key, env[name]), f"environment variable {name}")
    settings = Settings(**merged)
    return settings.with_overrides(**flags)


def _file_layer(path: str | None) -> list[tuple[str, Mapping[str, Any]]]:
    if not path:
        return []
    import yaml

    from config.yamlsource import load

    try:
        doc = load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise InvalidDefinition(f"{path}:0: cannot read settings file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InvalidDefinition(f"{path}:{mark.line + 1 if mark else 0}: YAML syntax error: {exc}") from None
    if isinstance(doc, dict) and "settings" in doc and isinstance(doc["settings"], dict):
        doc = doc["settings"]
    if not isinstance(doc, dict):
        raise InvalidDefinition(f"{path}:1: a settings file must be a mapping")
    return [(str(path), doc)]


def _checked(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            line = getattr(values, "line_of", lambda k: 0)(key)
            raise InvalidDefinition(f"{source}:{line}: unknown settings key {key!r}{hint}; "
                                    f"allowed: {', '.join(KEYS)}")
        out[key] = _coerce(key, value, source)
    return out


def _from_env(key: str, raw: str) -> Any:
    if key in LIST_KEYS:
        return [part.strip() for part in raw.split(",") if part.strip()]
    if key in MAP_KEYS:
        try:
            return json.loads(raw)
        except ValueError:
            raise InvalidDefinition(f"environment variable FSM_{key.upper()} must be a JSON object") from None
    return raw


def _coerce(key: str, value: Any, source: str) -> Any:
    if key in LIST_KEYS:
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise InvalidDefinition(f"{source}: settings {key!r} must be a URL/ARN or a list of them")
        return list(value)
    if key in MAP_KEYS:
        if not isinstance(value, dict):
            raise InvalidDefinition(f"{source}: settings {key!r} must be a mapping")
        if key == "metrics":
            value = {"target": "none", "namespace": "lambda-fsm", **value}
            if value["target"] not in ("none", "cloudwatch", "emf"):
                raise InvalidDefinition(f"{source}: settings metrics.target must be one of "
                                        f"none, cloudwatch, emf; got {value['target']!r}")
        return dict(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidDefinition(f"{source}: settings {key!r} must be a number, got {value!r}") from None
    if number < 0:
        raise InvalidDefinition(f"{source}: settings {key!r} must be 0 or more")
    return int(number) if key == "max_local_hops" else number
