"""Settings: which backend plays which role, and the knobs of the protocol.

Precedence, highest first: a command-line flag, the environment variable ``FSM_<KEY>``
(lists comma-separated, mappings as JSON), the settings file (``--settings FILE`` or
``FSM_SETTINGS``), the config file's ``settings:`` mapping, the default. Nothing is
read at import time.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fsm.errors import InvalidDefinition

DEFAULT_STORE = "sqlite:///.fsm/fsm.sqlite3"
LIST_KEYS = ("store", "stream", "retry", "checkpoint", "dead_letter", "notify")
MAP_KEYS = ("endpoints", "aws", "metrics", "chaos", "api", "offload")
OFFLOAD_KEYS = ("store", "threshold")
DEFAULT_OFFLOAD_THRESHOLD = 64 * 1024
API_KEYS = ("token_secret", "auth")
NUMBER_KEYS = ("lease_timeout", "max_local_hops", "resend_after", "history_retention_days")
FOLDER_KEYS = ("import_roots",)
CHOICE_KEYS = {"concurrency": ("locked", "optimistic")}  # one word from a fixed set  # lists of folders, comma-separated in the environment
# How each URL scheme or ARN service is written, in the order error messages list them.
FORMS = {
    "memory": "memory://",
    "sqlite": "sqlite:///REL/PATH or sqlite:////ABS/PATH",
    "redis": "redis://[:PASSWORD@]HOST:PORT/DB",
    "rediss": "rediss://[:PASSWORD@]HOST:PORT/DB",
    "memcached": "memcached://HOST:PORT",
    "sqs": "arn:aws:sqs:REGION:ACCOUNT:QUEUE",
    "kinesis": "arn:aws:kinesis:REGION:ACCOUNT:stream/NAME",
    "sns": "arn:aws:sns:REGION:ACCOUNT:TOPIC",
    "dynamodb": "arn:aws:dynamodb:REGION:ACCOUNT:table/NAME",
    "events": "arn:aws:events:REGION:ACCOUNT:event-bus/NAME",
}
# What a URL names, per settings key (and ``fsm worker --source``): the registry role whose
# schemes it takes, and a noun for messages. Checkpoints are DynamoDB tables, opened directly.
ROLES = {"store": ("store", "a store"), "stream": ("bus", "a stream"), "retry": ("bus", "a retry queue or timer table"),
         "dead_letter": ("bus", "a dead-letter target"), "notify": ("bus", "a notify target"),
         "checkpoint": ("", "a checkpoint table"), "source": ("poller", "a source")}
HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")


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
    api: dict[str, Any] = field(default_factory=dict)         # the HTTP API: auth (iam | token), token_secret
    offload: dict[str, Any] = field(default_factory=dict)     # claim check: store (s3://BUCKET/PREFIX), threshold
    lease_timeout: float = 960.0   # above Lambda's 900 s maximum run time
    max_local_hops: int = 100
    resend_after: float = 60.0
    history_retention_days: float = 0.0
    concurrency: str = "locked"    # locked: a fenced lease per step; optimistic: one conditional commit
    import_roots: list[str] = field(default_factory=list)  # folders `- import:` may read besides the top file's

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply command-line flags (``None`` means not given); errors name the flag."""
        given = {k: _coerce(k, v, "--" + k.replace("_", "-")) for k, v in overrides.items() if v is not None}
        return Settings(**{**self.__dict__, **given})


KEYS = tuple(f.name for f in fields(Settings))


def load_settings(config_settings: Mapping[str, Any] | None = None, settings_file: str | None = None,
                  environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    for source, values in (("config file settings", config_settings or {}),
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
        raise InvalidDefinition(f"cannot read settings file {path!r} (--settings or FSM_SETTINGS): "
                                f"{exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidDefinition(f"{path}:0: not UTF-8 text (at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc).replace("\n", " ")
        raise InvalidDefinition(f"{path}:{mark.line + 1 if mark else 0}: YAML syntax error: {reason}") from None
    if isinstance(doc, dict) and "settings" in doc and isinstance(doc["settings"], dict):
        doc = doc["settings"]
    if not isinstance(doc, dict):
        raise InvalidDefinition(f"{path}:1: a settings file must be a mapping")
    return [(str(path), doc)]


def _checked(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        line = getattr(values, "line_of", lambda k: 0)(key)
        at = f"{source}:{line}" if line else source
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidDefinition(f"{at}: unknown settings key {key!r}{hint}; allowed: {', '.join(KEYS)}")
        out[key] = _coerce(key, value, f"{at}: settings {key!r}" if line else f"{source} {key!r}")
    return out


def _from_env(key: str, raw: str) -> Any:
    if key in LIST_KEYS or key in FOLDER_KEYS:
        return [part.strip() for part in raw.split(",") if part.strip()]
    if key in MAP_KEYS:
        try:
            return json.loads(raw)
        except ValueError:
            raise InvalidDefinition(f"environment variable FSM_{key.upper()} must be a JSON object") from None
    return raw


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check one value; ``where`` names the input it came from (a flag, an environment
    variable, a file's line and key), so every message says what to fix."""
    if key in CHOICE_KEYS:
        if value not in CHOICE_KEYS[key]:
            raise InvalidDefinition(f"{where} must be one of {', '.join(CHOICE_KEYS[key])}, got {value!r}")
        return value
    if key in LIST_KEYS:
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidDefinition(f"{where} must be a URL/ARN or a list of them")
        if key == "store" and not value:
            raise InvalidDefinition(f"{where} is empty; {_accepted('store')}")
        return [check_address(key, v, where) for v in value]
    if key in FOLDER_KEYS:
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() and "\0" not in v for v in value):
            raise InvalidDefinition(f"{where} must be a folder or a list of folders")
        return list(value)
    if key in MAP_KEYS:
        if not isinstance(value, dict):
            raise InvalidDefinition(f"{where} must be a mapping")
        if key == "metrics":
            value = {"target": "none", "namespace": "lambda-fsm", **value}
            if value["target"] not in ("none", "cloudwatch", "emf"):
                raise InvalidDefinition(f"{where}: metrics.target must be one of "
                                        f"none, cloudwatch, emf; got {value['target']!r}")
        if key == "api":
            _check_api(value, where)
        if key == "offload":
            return _check_offload(value, where)
        return dict(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidDefinition(f"{where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidDefinition(f"{where} must be a finite number, got {value!r}")
    if number < 0:
        raise InvalidDefinition(f"{where} must be 0 or more, got {value!r}")
    return int(number) if key == "max_local_hops" else number


def import_roots(config_settings: Mapping[str, Any], config_file: Path, settings_file: str | None = None,
                 environ: Mapping[str, str] | None = None) -> list[Path]:
    """The folders, resolved, that ``- import:`` may read besides the top file's own tree.

    The loader asks while it reads the machines file, before :func:`load_settings` runs,
    so this reads the one key through the same layers and precedence: the environment,
    then the settings file, then the machines file's own ``settings:``. A relative folder
    is taken from the file that names it (the current directory for the environment)."""
    env = os.environ if environ is None else environ
    if env.get("FSM_IMPORT_ROOTS"):
        where = "environment variable FSM_IMPORT_ROOTS"
        return _folders(_coerce("import_roots", _from_env("import_roots", env["FSM_IMPORT_ROOTS"]), where), Path.cwd())
    settings_path = settings_file or env.get("FSM_SETTINGS")
    for source, values in (*_file_layer(settings_path), (str(config_file), config_settings)):
        if values.get("import_roots") is not None:
            line = getattr(values, "line_of", lambda k: 0)("import_roots")
            where = f"{source}:{line}: settings 'import_roots'" if line else f"{source} 'import_roots'"
            return _folders(_coerce("import_roots", values["import_roots"], where), Path(source).absolute().parent)
    return []


def _folders(names: list[str], base: Path) -> list[Path]:
    return [(base / Path(name).expanduser()).resolve() for name in names]


def _check_api(value: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(value) - set(API_KEYS))
    if unknown:
        raise InvalidDefinition(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(API_KEYS)}")
    if value.get("auth", "iam") not in ("iam", "token"):
        raise InvalidDefinition(f"{where}: api.auth must be iam or token, got {value['auth']!r}")
    secret = value.get("token_secret")
    if secret is not None and not (isinstance(secret, str) and secret.startswith("arn:aws:secretsmanager:")):
        raise InvalidDefinition(f"{where}: api.token_secret must be a Secrets Manager ARN "
                                f"(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME), got {secret!r}")


def _check_offload(value: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(value) - set(OFFLOAD_KEYS))
    if unknown:
        raise InvalidDefinition(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(OFFLOAD_KEYS)}")
    store = value.get("store")
    if not isinstance(store, str) or not (store.startswith("s3://") and len(store) > 5 and store[5] != "/"
                                          or store == "memory://"):
        raise InvalidDefinition(f"{where}: offload.store must be s3://BUCKET/PREFIX (or memory:// in tests), "
                                f"got {store!r}")
    threshold = value.get("threshold", DEFAULT_OFFLOAD_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise InvalidDefinition(f"{where}: offload.threshold must be a whole number of bytes, 0 or more, "
                                f"got {threshold!r}")
    return {"store": store, "threshold": threshold}


# -- URLs and ARNs --------------------------------------------------------------------------


def check_address(key: str, url: str, where: str) -> str:
    """Refuse, at load, a URL or ARN that no adapter of ``key``'s role could open, in a
    message naming the input and the forms it takes; found later, the same mistake would
    be a traceback from deep inside a client library. ``key`` is a settings key, or
    ``source`` for ``fsm worker --source``."""
    problem = _address_problem(url, key)
    if problem:
        raise InvalidDefinition(f"{where} {url!r}: {problem}; {_accepted(key)}")
    return url


def _schemes(key: str) -> list[str]:
    """The schemes and ARN services ``key`` takes, in the order of :data:`FORMS`."""
    from sources.registry import ADAPTERS

    role = ROLES[key][0]
    known = set(ADAPTERS[role]) if role else {"dynamodb"}
    return [scheme for scheme in FORMS if scheme in known] + sorted(known - set(FORMS))


def _accepted(key: str) -> str:
    # A memory:// bus is for tests: nothing outside this process would ever read it.
    forms = [FORMS.get(scheme, f"{scheme}://...") for scheme in _schemes(key) if scheme != "memory" or key == "store"]
    listed = ", ".join(forms[:-1]) + f" or {forms[-1]}" if len(forms) > 1 else forms[0]
    return f"{ROLES[key][1]} is {listed}"


def _address_problem(url: str, key: str) -> str | None:
    if not url.strip():
        return "the value is empty"
    if url != url.strip():
        return "spaces around the value"
    schemes, noun = _schemes(key), ROLES[key][1]
    if url.startswith("arn:"):
        return _arn_problem(url, schemes, noun)
    scheme, sep, rest = url.partition("://")
    urls = [s for s in schemes if not FORMS.get(s, "").startswith("arn:")]
    if not sep:
        return "not a URL (SCHEME://...) or an ARN (arn:...)"
    if scheme not in urls:
        if FORMS.get(scheme, "").startswith("arn:"):
            return f"{scheme} is named by an ARN, not a URL: {FORMS[scheme]}"
        if scheme in FORMS:
            return f"a {scheme}:// URL cannot be {noun}"
        close = difflib.get_close_matches(scheme, urls, n=1, cutoff=0.75)
        return f"unknown scheme {scheme}://" + (f" (did you mean {close[0]}://{rest}?)" if close else "")
    if scheme == "sqlite":
        return _sqlite_problem(rest)
    if scheme in ("redis", "rediss", "memcached"):
        return _server_problem(url, scheme)
    return None


def _sqlite_problem(rest: str) -> str | None:
    if rest.startswith("/") and rest.strip("/"):
        return None
    if not rest.strip("/"):
        return "names no database file"
    return (f"a sqlite URL has three slashes before a relative path and four before an absolute one "
            f"(did you mean sqlite:///{rest}?)")


def _server_problem(url: str, scheme: str) -> str | None:
    """Host and port well-formed (port 1-65535), and for redis a numeric database."""
    parts = urlsplit(url)
    host_port = parts.netloc.rpartition("@")[2]
    if host_port.startswith("["):  # an IPv6 address: [::1]:6379
        host, _, port = host_port.partition("]")
        host, port = host + "]", port.removeprefix(":")
    else:
        host, _, port = host_port.partition(":")
    if not host:
        return "names no host"
    if not HOST.fullmatch(host):
        return f"host {host!r} is not a host name or an IP address"
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"port {port!r} is not a number from 1 to 65535"
    database = parts.path.strip("/")
    if scheme != "memcached" and database and not database.isdigit():
        return f"database {database!r} is not a number"
    return None


def _arn_problem(arn: str, schemes: list[str], noun: str) -> str | None:
    parts = arn.split(":", 5)
    if len(parts) != 6 or not parts[2] or not parts[5]:
        return "not a whole ARN (arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE)"
    service, resource = parts[2], parts[5]
    arns = [s for s in schemes if FORMS.get(s, "").startswith("arn:")]
    if service not in arns:
        close = difflib.get_close_matches(service, arns, n=1, cutoff=0.75)
        return f"an {service} ARN cannot be {noun}" + (f" (did you mean {close[0]}?)" if close else "")
    wanted = FORMS[service].rsplit(":", 1)[1]  # table/NAME, stream/NAME, QUEUE...
    kind, slash, _ = wanted.partition("/")
    found_kind, _, name = resource.partition("/")
    if slash and (found_kind != kind or not name):
        return f"the resource of a {service} ARN is {kind}/NAME, not {resource!r}"
    return None
