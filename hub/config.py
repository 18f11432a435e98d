"""The hub's configuration: one YAML file, validated by pydantic models.

Secrets never sit in the file as literals: a string value may hold
``${NAME}`` — the environment variable NAME or, when it is not set, the
systemd credential NAME (``LoadCredential=NAME:…``, read from
``$CREDENTIALS_DIRECTORY``) — ``${file:/path}`` (a file's content, trailing
newline stripped) or ``${cred:NAME}`` (only the credential). Variables not in
the environment are also read from a ``.env`` file beside the config (the
format of systemd's ``EnvironmentFile=``: ``NAME=value`` lines, ``#``
comment lines), so ``cp systemd/hub.env.example .env`` is enough to try it.

A source or destination with ``enabled: false`` needs none of its secrets:
only its keys are checked (a typo is still reported), not its values.

Every problem — a missing variable, a wrong type, an unknown key (with the
nearest known one), a sync rule naming a destination that does not exist —
is collected and reported together, each with its key path and line.
"""

from __future__ import annotations

import base64
import difflib
import os
import re
import typing
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from hub.errors import ConfigError, Problem
from hub.standard_webhooks import decode_secret
from hub.yamlfile import YamlDoc, join_path, load_yaml

# ---------------------------------------------------------------- value types

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``"500ms"``, ``"60s"``, ``"5m"``, ``"1h"``, ``"1d"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 60s, 5m, 1h")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ValueError(f"expected a duration such as 500ms, 60s, 5m, 1h; got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- sections


class ServerConfig(Strict):
    """The HTTP listener and what it may hold: every bound here keeps one
    client, or a slow database, from growing the process or tying it up."""

    listen: str = "127.0.0.1:8080"
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    # Bodies held at once while they wait for their commit (the database slow
    # or locked); past it a request is answered 503 + Retry-After, unread.
    max_pending_bytes: int = Field(default=64 * 1_048_576, gt=0)
    # How long a request waits for its events to be committed before 503.
    inbox_timeout: Duration = Field(default=10.0, gt=0)
    # A connection that has not sent a whole request head this long after it
    # opened (or after its last answer) is closed: slow clients, idle keep-alives.
    header_timeout: Duration = Field(default=10.0, gt=0)
    # Time to receive a body once its head arrived (408 past it).
    body_timeout: Duration = Field(default=30.0, gt=0)
    # Open connections at once; one more is answered 503 and closed.
    max_connections: int = Field(default=4096, gt=0)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected host:port, got {v!r}")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class StorageConfig(Strict):
    url: str = "sqlite+aiosqlite:///hub.db"
    auto_migrate: bool = True
    # Group commit: one writer commits, in one transaction, everything that
    # arrived while the previous commit ran (at most batch_max rows); requests
    # await their batch. batch_delay waits longer to grow batches (0: never).
    batch_max: int = Field(default=500, gt=0)
    batch_delay: Duration = 0.0
    sqlite_synchronous: Literal["full", "normal"] = "full"
    # How long a SQLite write waits for another process's lock before the hub
    # gives up and answers 503 (the platform then retries).
    sqlite_busy_timeout: Duration = 30.0
    # Page cache of each SQLite connection, in MB (a hub process holds two to
    # four). Another process's commit empties it, and on SQLite every role's
    # process commits many times a second, so what it holds serves one
    # transaction: a pipeline batch touches ~10-20 MB with a million
    # customers. Draining 60,000 events in process, the pipeline held 220 MB
    # with 64 MB caches and 150 MB with 2 MB, at the same speed within the
    # box's noise (docs/throughput.md).
    sqlite_cache_mb: int = Field(default=16, ge=1, le=4096)
    # How often the process holding the pipeline copies the WAL's pages into
    # the database file (hub.checkpoint), so that commits never do; 0 leaves
    # it to SQLite, inside the commit that takes the WAL past 1,000 pages.
    sqlite_checkpoint_every: Duration = Field(default=1.0, ge=0)

    @field_validator("url")
    @classmethod
    def _known_driver(cls, v: str) -> str:
        if not (v.startswith("sqlite+aiosqlite://") or v.startswith("postgresql+asyncpg://")):
            raise ValueError(
                "expected sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB"
            )
        return v


def _b64_32(v: SecretStr) -> SecretStr:
    try:
        raw = base64.b64decode(v.get_secret_value(), validate=True)
    except ValueError as err:
        raise ValueError("must be base64 (openssl rand -base64 32)") from err
    if len(raw) != 32:
        raise ValueError(f"must decode to 32 bytes, got {len(raw)} (openssl rand -base64 32)")
    return v


class TokenConfig(Strict):
    name: str
    token: SecretStr
    role: Literal["viewer", "operator", "admin"] = "viewer"
    pii: bool = False


class SecurityConfig(Strict):
    pii_key: SecretStr
    # After a rotation: the earlier keys, oldest first. What they sealed stays
    # readable, and the phone blind index keeps the first key's (lookups still
    # find existing customers); new data is sealed with pii_key.
    previous_pii_keys: list[SecretStr] = Field(default_factory=list)
    tokens: list[TokenConfig] = Field(default_factory=list)

    @field_validator("pii_key")
    @classmethod
    def _key(cls, v: SecretStr) -> SecretStr:
        return _b64_32(v)

    @field_validator("previous_pii_keys")
    @classmethod
    def _old_keys(cls, v: list[SecretStr]) -> list[SecretStr]:
        return [_b64_32(k) for k in v]


class SourceConfig(BaseModel):
    """Fields every source has; each connector extends this with its own."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: Slug
    kind: str
    mapping: str | None = None
    enabled: bool = True

    @property
    def mapping_name(self) -> str:
        return self.mapping or self.kind


class QuotaConfig(Strict):
    """The platform's call quota for this app: a token bucket refilled at
    ``calls_per_second`` holding up to ``burst`` calls."""

    calls_per_second: float = Field(default=10.0, gt=0)
    burst: int = Field(default=10, ge=1)
    # Stay this share under the quota: calls issued exactly at the limit arrive
    # with network jitter, and the gateway counts arrivals.
    headroom: float = Field(default=0.05, ge=0, lt=1)

    @property
    def rate(self) -> float:
        return self.calls_per_second * (1 - self.headroom)


class CircuitConfig(Strict):
    """Stop calling a platform that keeps failing; try one call after ``cooldown``."""

    failures: int = Field(default=5, ge=1)
    cooldown: Duration = 60.0
    max_cooldown: Duration = 900.0


class PolledSourceConfig(SourceConfig):
    """Fields every polled source has (Taobao, JD): cadence, window, quota, circuit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    poll_every: Duration = 60.0
    # Each poll re-reads this much before the last committed high-water mark,
    # catching records the platform indexed late; duplicates are dropped by key.
    overlap: Duration = 300.0
    # The window ends this far before now, so records still being written are
    # read next time rather than half-seen now.
    lag: Duration = 5.0
    # The longest window one query covers; a long backlog is read window by window.
    max_window: Duration = 86400.0
    # Where the first poll starts, counted back from now.
    initial_lookback: Duration = 86400.0
    page_size: int = Field(default=100, ge=1)
    timeout: Duration = 15.0
    # One hub process polls the source at a time, renewing its lease with every
    # page it commits; when that process dies another takes over after this long.
    lease: Duration = Field(default=120.0, gt=0)
    quota: QuotaConfig = QuotaConfig()
    circuit: CircuitConfig = CircuitConfig()


class RetryConfig(Strict):
    """Backoff of a failing push: exponential from ``initial`` with jitter,
    capped at ``max_delay``; dead-lettered after ``give_up_after`` or
    ``max_attempts``, whichever comes first."""

    initial: Duration = 5.0
    multiplier: float = Field(default=2.0, ge=1.0)
    max_delay: Duration = 3600.0
    jitter: Duration = 1.0
    give_up_after: Duration = 86400.0
    max_attempts: int = Field(default=50, ge=1)


class DestinationConfig(BaseModel):
    """Fields every destination has; each kind may extend this with its own."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: Slug
    kind: str
    url: str | None = None
    secret: SecretStr | None = None
    mapping: str | None = None
    pii: bool = False
    # One attempt's limit; it must fit in delivery.lease with room to record it.
    timeout: Duration = Field(default=10.0, gt=0)
    # Pushes to this destination at once; one that hangs fills only these.
    max_in_flight: int = Field(default=64, gt=0)
    # An attempt unanswered this long gives its slot to the next push and waits
    # aside (at most 4 × max_in_flight of them), so a few hanging pushes cannot
    # hold every slot until their timeout.
    slow_after: Duration = Field(default=2.0, gt=0)
    # Of an answer, this much is read (kept for the operator: the first 2,000
    # characters); the rest is never read and its connection is closed.
    max_response_bytes: int = Field(default=65536, ge=1024)
    retry: RetryConfig | None = None
    # Pushes a second at most (what the receiver's contract allows); None: as fast as slots free.
    rate: float | None = Field(default=None, gt=0)
    # A destination whose attempts keep failing (errors, timeouts — not refusals of one
    # push) is left alone as a whole for the cooldown, then tried with one push.
    circuit: CircuitConfig = CircuitConfig(failures=10, cooldown=30.0, max_cooldown=600.0)
    # The destination reports back (WMS "goods received", finance "refund executed"):
    # POST /callbacks/{id}, Standard Webhooks signed with this secret, mapped by
    # callback_mapping (default "<kind>_callback").
    callback_secret: SecretStr | None = None
    callback_mapping: str | None = None
    enabled: bool = True

    @property
    def mapping_name(self) -> str:
        return self.mapping or self.kind

    @property
    def callback_mapping_name(self) -> str:
        return self.callback_mapping or f"{self.kind}_callback"

    @field_validator("callback_secret")
    @classmethod
    def _callback_whsec(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value():
            decode_secret(v.get_secret_value())
        return v


CHANGE_TYPES = ("ticket.created", "ticket.status_changed", "ticket.updated", "ticket.merged")


class SyncRule(Strict):
    """``on`` these ticket changes push ``to`` these destinations — optionally only
    into ``status``, for tickets of ``type``, ``channel`` (a source kind) or
    ``source`` (a source id), and with a refund of at least ``min_refund`` yuan.
    Every condition given must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    on: Annotated[list[str], BeforeValidator(_listify)]
    status: Annotated[list[str] | None, BeforeValidator(_listify)] = None
    type: Annotated[list[str] | None, BeforeValidator(_listify)] = None
    channel: Annotated[list[str] | None, BeforeValidator(_listify)] = None
    source: Annotated[list[str] | None, BeforeValidator(_listify)] = None
    min_refund: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=2)
    to: Annotated[list[str], BeforeValidator(_listify)]

    @property
    def min_refund_fen(self) -> int | None:
        return None if self.min_refund is None else int(self.min_refund * 100)

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: list[str] | None) -> list[str] | None:
        from hub.lifecycle import TYPES

        for t in v or []:
            if t not in TYPES:
                raise ValueError(f"unknown ticket type {t!r}; expected one of {', '.join(TYPES)}")
        return v

    @field_validator("on")
    @classmethod
    def _known_changes(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in CHANGE_TYPES]
        if bad:
            raise ValueError(f"unknown change {bad[0]!r}; expected one of {', '.join(CHANGE_TYPES)}")
        return v

    @field_validator("status")
    @classmethod
    def _known_status(cls, v: list[str] | None) -> list[str] | None:
        from hub.lifecycle import STATUSES

        for s in v or []:
            if s not in STATUSES:
                raise ValueError(f"unknown status {s!r}; expected one of {', '.join(STATUSES)}")
        return v


class PipelineConfig(Strict):
    # false = ingest only: events are stored and acknowledged but not processed
    # until the pipeline is enabled again (maintenance, benchmarks).
    enabled: bool = True
    batch: int = Field(default=250, gt=0)
    tick: Duration = 1.0
    # A pipeline in a process without intake of its own (SQLite's second
    # process) is woken by intake's process (hub.wake, a hint that may be
    # lost) and looks for new events this often besides.
    poll: Duration = Field(default=0.1, gt=0)
    # After a batch smaller than ``batch``, wait this long before the next: a
    # batch's fixed cost (its reads, its transaction) is shared by more events.
    gather: Duration = Field(default=0.025, ge=0)


def record_margin(lease: float) -> float:
    """What an attempt leaves of its claim's lease for its outcome to be recorded."""
    return min(5.0, lease * 0.2)


class DeliveryConfig(Strict):
    # Rows one claim may take across destinations (each takes at most its free
    # slots, max_in_flight); claims, attempts and recording overlap.
    batch: int = Field(default=256, gt=0)
    tick: Duration = 1.0
    # How long a claimed push is ours: an attempt is cut off before its lease
    # ends, and a claim left by a dead process is taken again after it.
    lease: Duration = Field(default=60.0, gt=0)
    # Delivery in a process without the pipeline (SQLite's third process) is
    # woken by the pipeline's (hub.wake, a hint) and looks for due pushes this
    # often besides (an indexed read).
    poll: Duration = Field(default=0.1, gt=0)
    retry: RetryConfig = Field(default_factory=RetryConfig)


class SupervisorConfig(Strict):
    """Background workers (inbox writer, pipeline, delivery, pollers) are
    restarted when they fail; one silent for ``stall_after`` turns /readyz
    503 and stops the systemd watchdog ping, so systemd restarts the process."""

    stall_after: Duration = Field(default=60.0, gt=0)
    max_backoff: Duration = Field(default=30.0, gt=0)
    # How many hub processes `hub run` starts: "auto" is one per core on
    # PostgreSQL; SQLite takes three, one role each (intake | processing |
    # delivery: one writer per file, more would queue on its lock), or 2
    # (intake + delivery | processing). 1 runs everything in one process.
    processes: int | Literal["auto"] = "auto"
    # The cores each role's processes run on (Linux), e.g. {processing: [1],
    # intake: [0], delivery: [0]}. A process runs on the cores of its roles
    # when every one of them is listed; otherwise, and by default, the kernel
    # places it. For a small box that its load oversubscribes: see
    # docs/throughput.md for what it changed on two cores.
    cpu_affinity: dict[Literal["intake", "processing", "delivery"], list[int]] = Field(default_factory=dict)

    @field_validator("processes")
    @classmethod
    def _at_least_one(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1 (or auto)")
        return v

    @field_validator("cpu_affinity")
    @classmethod
    def _cores(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        for role, cores in v.items():
            if not cores:
                raise ValueError(f"{role}: list at least one core")
            if any(c < 0 for c in cores):
                raise ValueError(f"{role}: cores are numbered from 0")
        return v


class LoggingConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    # The same message more than repeat_limit times within repeat_window is
    # counted, not written (the next one written says how many were left out);
    # 0 writes every line.
    repeat_limit: int = Field(default=20, ge=0)
    repeat_window: Duration = Field(default=60.0, gt=0)


class HubConfig(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    security: SecurityConfig
    sources: list[SourceConfig] = Field(default_factory=list)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    sync: list[SyncRule] = Field(default_factory=list)
    routing: dict[str, Any] | None = None
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    mappings_dir: str | None = None

    def source(self, source_id: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.id == source_id), None)

    def destination(self, dest_id: str) -> DestinationConfig | None:
        return next((d for d in self.destinations if d.id == dest_id), None)

    def retry_for(self, dest: DestinationConfig) -> RetryConfig:
        return dest.retry or self.delivery.retry


# ---------------------------------------------------------------- secrets

_REF = re.compile(r"\$\{([^}]*)\}")


def expand_secrets(
    value: Any, path: str, problems: list[Problem], doc: YamlDoc, env: Mapping[str, str]
) -> Any:
    """Replace ``${...}`` references throughout ``value``; record any that fail."""
    if isinstance(value, dict):
        return {k: expand_secrets(v, join_path(path, str(k)), problems, doc, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_secrets(v, join_path(path, i), problems, doc, env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def resolve(m: re.Match[str]) -> str:
        ref = m.group(1).strip()
        try:
            return _resolve_ref(ref, env)
        except LookupError as err:
            problems.append(doc.problem(path, str(err)))
            return ""

    return _REF.sub(resolve, value)


def _resolve_ref(ref: str, env: Mapping[str, str]) -> str:
    if ref.startswith("file:"):
        p = Path(ref[5:])
        try:
            return p.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as err:
            raise LookupError(f"cannot read secret file {p}: {err.strerror}") from err
    if ref.startswith("cred:"):
        cred_dir = env.get("CREDENTIALS_DIRECTORY")
        if not cred_dir:
            raise LookupError(f"${{{ref}}}: CREDENTIALS_DIRECTORY is not set (not run by systemd?)")
        return _resolve_ref("file:" + str(Path(cred_dir) / ref[5:]), env)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ref):
        raise LookupError(f"bad reference ${{{ref}}}: use ${{ENV_NAME}}, ${{file:/path}} or ${{cred:NAME}}")
    if ref in env:
        return env[ref]
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / ref).is_file():
        return _resolve_ref("file:" + str(Path(cred_dir) / ref), env)
    raise LookupError(f"environment variable {ref} is not set"
                      + (f" (nor credential {ref})" if cred_dir else ""))


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines as systemd's EnvironmentFile= reads them: blank and
    ``#``/``;`` lines skipped, one pair of surrounding quotes removed."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        name, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name.strip()] = value
    return out


# ---------------------------------------------------------------- loading


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path = join_path(path, part)
    return path


def _model_at(model: Any, loc: tuple[int | str, ...]) -> Any:
    """The pydantic model that holds the last key of ``loc`` (None if not one)."""
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return None
        model = _inner_model(fields[part].annotation)
    return model


def _inner_model(annotation: Any) -> Any:
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        if typing.get_args(arg):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


def _suggest(value: str, known: set[str]) -> str:
    close = difflib.get_close_matches(value, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def did_you_mean(model: Any, loc: tuple[int | str, ...]) -> str:
    """ " (did you mean 'x'?)" for an unknown key close to a known one; else ""."""
    holder = _model_at(model, loc[:-1]) if model is not None and loc else None
    if holder is None or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], list(holder.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _pydantic_problems(err: ValidationError, doc: YamlDoc, prefix: str = "",
                       model: Any = None) -> list[Problem]:
    out = []
    for e in err.errors():
        # Drop pydantic's internal union/function tags from the location.
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or "function-" in p)))
        path = _loc_to_path(loc)
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key" + did_you_mean(model, loc)
        elif e["type"] == "missing":
            msg = "required key is missing"
        out.append(doc.problem(path, msg))
    return out


def parse_config(
    doc: YamlDoc, registry: Any | None = None, env: Mapping[str, str] | None = None
) -> HubConfig:
    """Validate a parsed YAML document; raise ConfigError listing every problem.

    ``registry`` (a :class:`hub.registry.Registry`) validates each source's and
    destination's kind-specific fields; without it only the common fields are.
    """
    env = os.environ if env is None else env
    problems: list[Problem] = []
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem("", "the config file must be a mapping of sections")])
    data = {}
    for key, value in doc.data.items():
        if key in ("sources", "destinations") and isinstance(value, list):
            data[key] = [_expand_entry(item, f"{key}[{i}]", problems, doc, env) for i, item in enumerate(value)]
        else:
            data[key] = expand_secrets(value, str(key), problems, doc, env)
    unresolved = {p.path for p in problems}  # their values' own problems would only repeat it
    try:
        cfg = HubConfig.model_validate(data)
    except ValidationError as err:
        problems.extend(p for p in _pydantic_problems(err, doc, model=HubConfig) if p.path not in unresolved)
        raise ConfigError(problems) from None

    sources = list(cfg.sources)
    dests = list(cfg.destinations)
    _unique_ids(sources, "sources", doc, problems)
    _unique_ids(dests, "destinations", doc, problems)
    dest_ids = {d.id for d in dests}
    source_ids = {s.id for s in sources}
    kinds = {s.kind for s in sources} | (set(registry.sources) if registry is not None else set())
    for i, rule in enumerate(cfg.sync):
        for key, values, known, what in (("to", rule.to, dest_ids, "destination with id"),
                                         ("source", rule.source or [], source_ids, "source with id"),
                                         ("channel", rule.channel or [], kinds, "channel (source kind)")):
            for j, value in enumerate(values):
                if value not in known:
                    problems.append(doc.problem(f"sync[{i}].{key}[{j}]" if len(values) > 1 else f"sync[{i}].{key}",
                                                f"no {what} {value!r}{_suggest(value, known)}"))
    room = cfg.delivery.lease - record_margin(cfg.delivery.lease)
    for i, dest in enumerate(dests):
        if dest.enabled and dest.timeout > room:
            problems.append(doc.problem(
                f"destinations[{i}].timeout",
                f"{dest.timeout:g}s does not fit in delivery.lease ({cfg.delivery.lease:g}s) less "
                f"{record_margin(cfg.delivery.lease):g}s to record the outcome: shorten it or lengthen the lease"))
    if registry is not None:
        for i, src in enumerate(sources):
            sources[i] = registry.validate_source(src, f"sources[{i}]", doc, _kept(src, problems))
        for i, dst in enumerate(dests):
            dests[i] = registry.validate_destination(dst, f"destinations[{i}]", doc, _kept(dst, problems))
    if problems:
        raise ConfigError(problems)
    return cfg.model_copy(update={"sources": sources, "destinations": dests})


def _expand_entry(item: Any, path: str, problems: list[Problem], doc: YamlDoc, env: Mapping[str, str]) -> Any:
    """A source's or destination's secrets; a disabled one's are not needed."""
    if isinstance(item, dict) and item.get("enabled") is False:
        return expand_secrets(item, path, [], doc, env)  # what cannot be resolved stays empty
    return expand_secrets(item, path, problems, doc, env)


class _KeysOnly(list[Problem]):
    """Problems of a disabled entry: only unknown keys and kinds count (its values
    — secrets left empty, say — are checked once it is enabled)."""

    def __init__(self, into: list[Problem]):
        super().__init__()
        self.into = into

    def append(self, p: Problem) -> None:
        if p.message.startswith(("unknown key", "unknown source kind", "unknown destination kind")):
            self.into.append(p)

    def extend(self, ps: typing.Iterable[Problem]) -> None:
        for p in ps:
            self.append(p)


def _kept(entry: Any, problems: list[Problem]) -> list[Problem]:
    return problems if entry.enabled else _KeysOnly(problems)


def _unique_ids(items: list[Any], section: str, doc: YamlDoc, problems: list[Problem]) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.id in seen:
            problems.append(doc.problem(f"{section}[{i}].id", f"duplicate id {item.id!r}"))
        seen.add(item.id)


def load_config(path: str | Path, registry: Any | None = None,
                env: Mapping[str, str] | None = None) -> HubConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError([Problem("", "config file not found", str(p))])
    doc = load_yaml(p)
    if env is None:
        dotenv = p.parent / ".env"
        env = {**read_env_file(dotenv), **os.environ} if dotenv.is_file() else os.environ
    cfg = parse_config(doc, registry, env)
    if cfg.mappings_dir is None:
        # Relative to the config file, so `hub run -c /etc/hub/config.yaml` finds
        # /etc/hub/mappings when present, else the packaged defaults.
        local = p.parent / "mappings"
        if local.is_dir():
            cfg = cfg.model_copy(update={"mappings_dir": str(local.resolve())})
    return cfg
