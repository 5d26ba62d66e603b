"""Configuration: TOML in, typed sections out, every mistake named by its key.

Each section is a dataclass; a field's metadata holds the check that
converts and validates the raw TOML value. Unknown sections and keys are
errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from edgeproxy.security.scanners import DEFAULT_SCANNERS
from edgeproxy.sip import SipError, parse_uri

TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
SECURE = ("tls", "wss")


class ConfigError(Exception):
    """A bad configuration; the message starts with the offending key."""


def _check(fn: Callable[[Any, str], Any]) -> dict[str, Any]:
    return {"check": fn}


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _opt_file(value: Any, key: str) -> str | None:
    path = _str(value, key)
    if not os.path.isfile(path):
        raise ConfigError(f"{key}: file not found: {path}")
    return path


def _header_value(value: Any, key: str) -> str:
    if not isinstance(value, str) or any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
        raise ConfigError(f"{key}: expected a string without control characters, got {value!r}")
    return value.strip()


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _str_list(value: Any, key: str) -> list[str]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
    return [_str(v, f"{key}[{i}]") for i, v in enumerate(value)]


def _host_port_list(value: Any, key: str) -> list[str]:
    items = _str_list(value, key)
    for i, item in enumerate(items):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{key}[{i}]: expected HOST:PORT, got {item!r}")
    return items


def _number(low: float, high: float, integer: bool = False) -> Callable[[Any, str], Any]:
    def check(value: Any, key: str) -> Any:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if not ok or isinstance(value, bool) or not low <= value <= high:
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"{key}: expected {kind} in [{low}, {high}], got {value!r}")
        return value

    return check


def _choice(*options: str) -> Callable[[Any, str], str]:
    def check(value: Any, key: str) -> str:
        if value not in options:
            raise ConfigError(f"{key}: expected one of {', '.join(options)}, got {value!r}")
        return str(value)

    return check


@dataclass(frozen=True, slots=True)
class ListenSpec:
    transport: str  # udp | tcp | tls | ws | wss
    host: str  # an IP address (IPv6 without brackets)
    port: int

    @property
    def secure(self) -> bool:
        return self.transport in SECURE

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def parse_listen(value: Any, key: str) -> ListenSpec:
    """`proto:host:port`, host an IPv4 address or a bracketed IPv6 one."""
    text = _str(value, key)
    proto, _, rest = text.partition(":")
    host, sep, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        port_number = int(port)
    except ValueError:
        port_number = -1
    if proto.lower() not in TRANSPORTS or not sep or not 0 <= port_number <= 65535:
        raise ConfigError(f"{key}: expected 'udp|tcp|tls|ws|wss:IP:PORT' (IPv6 in brackets), got {text!r}")
    return ListenSpec(proto.lower(), host, port_number)


def _listen_list(value: Any, key: str) -> list[ListenSpec]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: expected a non-empty list like [\"udp:0.0.0.0:5060\"], got {value!r}")
    specs = [parse_listen(v, f"{key}[{i}]") for i, v in enumerate(value)]
    seen: set[tuple[str, str, int]] = set()
    for i, spec in enumerate(specs):
        kind = "udp" if spec.transport == "udp" else "stream"
        if (kind, spec.host, spec.port) in seen:
            raise ConfigError(f"{key}[{i}]: {spec} listens on an address and port already used")
        seen.add((kind, spec.host, spec.port))
    return specs


DEFAULT_LISTEN = [ListenSpec("udp", "127.0.0.1", 5060), ListenSpec("tcp", "127.0.0.1", 5060)]


@dataclass(slots=True)
class ServerConfig:
    instance_id: str = field(default_factory=socket.gethostname, metadata=_check(_str))
    listen: list[ListenSpec] = field(default_factory=lambda: list(DEFAULT_LISTEN), metadata=_check(_listen_list))
    # name or VIP written in Record-Route/Path/Via; default: the first listen address
    advertise: str = field(default="", metadata=_check(_str))
    domains: list[str] = field(default_factory=list, metadata=_check(_str_list))
    drain_timeout: float = field(default=10.0, metadata=_check(_number(0, 3600)))
    # DNS servers for RFC 3263 lookups ("IP" or "IP:PORT"); empty: the system's
    nameservers: list[str] = field(default_factory=list, metadata=_check(_str_list))
    # Server header on our responses, User-Agent on our requests; empty: none (no fingerprint)
    user_agent: str = field(default="", metadata=_check(_header_value))
    # processes sharing the listening ports (SO_REUSEPORT); more than one needs the Redis store
    workers: int = field(default=1, metadata=_check(_number(1, 64, True)))


@dataclass(slots=True)
class TlsConfig:
    cert_file: str | None = field(default=None, metadata=_check(_opt_file))
    key_file: str | None = field(default=None, metadata=_check(_opt_file))
    ca_file: str | None = field(default=None, metadata=_check(_opt_file))  # for verifying peers we connect to
    verify_peer: bool = field(default=True, metadata=_check(_bool))


@dataclass(slots=True)
class LimitsConfig:
    max_message_size: int = field(default=65535, metadata=_check(_number(1024, 1 << 20, True)))
    max_headers: int = field(default=200, metadata=_check(_number(16, 10000, True)))
    max_line: int = field(default=8192, metadata=_check(_number(256, 1 << 20, True)))
    max_connections: int = field(default=10000, metadata=_check(_number(1, 1_000_000, True)))
    max_connections_per_ip: int = field(default=100, metadata=_check(_number(1, 1_000_000, True)))
    idle_timeout: float = field(default=600.0, metadata=_check(_number(1, 86400)))
    max_transactions: int = field(default=50000, metadata=_check(_number(10, 10_000_000, True)))
    max_transactions_per_source: int = field(default=0, metadata=_check(_number(0, 10_000_000, True)))  # 0: off
    # Timers J, L, M: how long a finished transaction absorbs retransmissions (RFC: 32 s; Kamailio wt_timer: 5 s)
    transaction_wait: float = field(default=5.0, metadata=_check(_number(0.5, 32)))
    # Timer C (RFC 3261 §16.6): a forwarded INVITE with no final answer this long is cancelled
    invite_timeout: float = field(default=180.0, metadata=_check(_number(1, 86400)))
    # UDP receive queue, as a share of its buffer, past which new requests (no To tag) received over
    # UDP are dropped unread until it drains to a fifth of that (senders retransmit them); 0: never
    overload_queue: float = field(default=0.25, metadata=_check(_number(0, 1)))


@dataclass(slots=True)
class KeepaliveConfig:
    mode: str = field(default="off", metadata=_check(_choice("off", "crlf", "options")))
    interval: float = field(default=30.0, metadata=_check(_number(1, 3600)))
    max_targets: int = field(default=100_000, metadata=_check(_number(1, 10_000_000, True)))


def _cidr_list(value: Any, key: str) -> list[str]:
    items = _str_list(value, key)
    for i, item in enumerate(items):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"{key}[{i}]: expected an address or network like 10.0.0.0/24, got {item!r}") from None
    return items


def _algorithms(value: Any, key: str) -> list[str]:
    items = _str_list(value, key)
    for i, item in enumerate(items):
        if item not in ("SHA-256", "MD5"):
            raise ConfigError(f"{key}[{i}]: expected SHA-256 or MD5, got {item!r}")
    if not items:
        raise ConfigError(f"{key}: needs at least one algorithm")
    return items


def _methods(value: Any, key: str) -> list[str]:
    return [m.upper() for m in _str_list(value, key)]


@dataclass(slots=True)
class RegistrarConfig:
    enabled: bool = field(default=True, metadata=_check(_bool))
    realm: str = field(default="", metadata=_check(_str))  # default: the first domain, else advertise
    auth: bool = field(default=True, metadata=_check(_bool))
    users: str = field(default="", metadata=_check(_str))  # a users TOML file, or "redis"
    secret: str = field(default="", metadata=_check(_str))  # nonce HMAC key, shared by all instances
    nonce_lifetime: float = field(default=300.0, metadata=_check(_number(10, 86400)))
    algorithms: list[str] = field(default_factory=lambda: ["SHA-256", "MD5"], metadata=_check(_algorithms))
    challenge_methods: list[str] = field(default_factory=list, metadata=_check(_methods))
    min_expires: int = field(default=60, metadata=_check(_number(1, 86400, True)))
    max_expires: int = field(default=3600, metadata=_check(_number(1, 2**31 - 1, True)))
    default_expires: int = field(default=3600, metadata=_check(_number(1, 2**31 - 1, True)))
    max_contacts: int = field(default=10, metadata=_check(_number(1, 1000, True)))


@dataclass(slots=True)
class StateConfig:
    backend: str = field(default="memory", metadata=_check(_choice("memory", "redis")))
    redis_url: str = field(default="redis://127.0.0.1:6379/0", metadata=_check(_str))
    key_prefix: str = field(default="ep:", metadata=_check(_str))
    # Redis Sentinel: the master is looked up from these (HOST:PORT) and followed across failovers
    sentinels: list[str] = field(default_factory=list, metadata=_check(_host_port_list))
    sentinel_master: str = field(default="mymaster", metadata=_check(_str))
    max_aors: int = field(default=1_000_000, metadata=_check(_number(1, 100_000_000, True)))
    record_calls: bool = field(default=True, metadata=_check(_bool))  # calls in progress in the store (/calls)


@dataclass(frozen=True, slots=True)
class BackendSpec:
    uri: str
    weight: int = 1


def _server_uri(value: Any, key: str) -> str:
    """A SIP server's URI (no user part): a backend, an upstream registrar."""
    uri = _str(value, key)
    try:
        parsed = parse_uri(uri)
    except SipError:
        parsed = None
    if parsed is None or not parsed.is_sip or parsed.user is not None:
        raise ConfigError(f"{key}: expected sip:HOST[:PORT][;transport=…], got {uri!r}")
    return uri


def _backends(value: Any, key: str) -> list[BackendSpec]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected [[dispatcher.backends]] tables, got {value!r}")
    out = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table with uri and weight, got {item!r}")
        unknown = set(item) - {"uri", "weight"}
        if unknown:
            raise ConfigError(f"{where}.{min(unknown)}: unknown key (known: uri, weight)")
        uri = _server_uri(item.get("uri"), f"{where}.uri")
        weight = _number(0, 1000, True)(item.get("weight", 1), f"{where}.weight")
        out.append(BackendSpec(uri, weight))
    return out


@dataclass(slots=True)
class DispatcherConfig:
    algorithm: str = field(default="round-robin", metadata=_check(
        _choice("round-robin", "weighted", "hash-callid", "hash-from", "least-busy")))
    probe_interval: float = field(default=5.0, metadata=_check(_number(0.1, 3600)))
    down_after: int = field(default=2, metadata=_check(_number(1, 100, True)))
    up_after: int = field(default=1, metadata=_check(_number(1, 100, True)))
    suspect_after: int = field(default=3, metadata=_check(_number(1, 100, True)))
    branch_timeout: float = field(default=5.0, metadata=_check(_number(0.5, 32)))  # no answer: next backend
    backends: list[BackendSpec] = field(default_factory=list, metadata=_check(_backends))


def _patterns(value: Any, key: str) -> tuple[str, ...]:
    return tuple(_str_list(value, key))


@dataclass(slots=True)
class SecurityConfig:
    trusted: list[str] = field(default_factory=list, metadata=_check(_cidr_list))  # backends
    rate_limit: int = field(default=0, metadata=_check(_number(0, 10_000_000, True)))  # 0: off
    rate_window: float = field(default=2.0, metadata=_check(_number(0.1, 3600)))
    auth_fail_limit: int = field(default=0, metadata=_check(_number(0, 1_000_000, True)))  # 0: off
    auth_fail_user_limit: int = field(default=0, metadata=_check(_number(0, 1_000_000, True)))  # 0: off
    auth_fail_window: float = field(default=60.0, metadata=_check(_number(1, 86400)))
    ban_time: float = field(default=300.0, metadata=_check(_number(1, 30 * 86400)))
    scanner_action: str = field(default="off", metadata=_check(_choice("off", "drop", "403")))
    scanner_user_agents: tuple[str, ...] = field(default=DEFAULT_SCANNERS, metadata=_check(_patterns))
    max_tracked: int = field(default=100_000, metadata=_check(_number(100, 100_000_000, True)))


def _opt_server_uri(value: Any, key: str) -> str:
    return "" if value == "" else _server_uri(value, key)


@dataclass(slots=True)
class ThrottleConfig:
    """REGISTER throttling (the edge as a mid-registrar in front of an upstream registrar)."""

    mode: str = field(default="off", metadata=_check(_choice("off", "mirror", "contact", "aor")))
    upstream: str = field(default="", metadata=_check(_opt_server_uri))  # the registrar REGISTERs go to
    client_expires: int = field(default=60, metadata=_check(_number(1, 86400, True)))
    upstream_expires: int = field(default=3600, metadata=_check(_number(1, 2**31 - 1, True)))
    authenticate: bool = field(default=False, metadata=_check(_bool))  # also challenge clients here


def _opt_address(value: Any, key: str) -> str:
    if value == "":
        return ""
    text = _str(value, key)
    host, sep, port = text.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        ok = bool(sep) and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{key}: expected IP:PORT (IPv6 in brackets), got {text!r}")
    return text


def _events(value: Any, key: str) -> list[str]:
    items = [e.lower() for e in _str_list(value, key)]
    for i, item in enumerate(items):
        if item not in ("presence", "dialog", "message-summary"):
            raise ConfigError(f"{key}[{i}]: expected presence, dialog or message-summary, got {item!r}")
    return items


@dataclass(slots=True)
class PresenceConfig:
    enabled: bool = field(default=True, metadata=_check(_bool))
    events: list[str] = field(default_factory=lambda: ["presence", "dialog", "message-summary"],
                              metadata=_check(_events))
    min_expires: int = field(default=60, metadata=_check(_number(1, 86400, True)))
    max_expires: int = field(default=7200, metadata=_check(_number(1, 2**31 - 1, True)))
    default_expires: int = field(default=3600, metadata=_check(_number(1, 2**31 - 1, True)))
    max_subscriptions: int = field(default=100_000, metadata=_check(_number(1, 100_000_000, True)))
    # at most one NOTIFY per subscription this often (changes in between coalesce); 0: off
    notify_interval: float = field(default=0.0, metadata=_check(_number(0, 3600)))


@dataclass(slots=True)
class MetricsConfig:
    listen: str = field(default="", metadata=_check(_opt_address))  # Prometheus endpoint; empty: none


@dataclass(slots=True)
class LogConfig:
    level: str = field(default="info", metadata=_check(_choice("debug", "info", "warning", "error")))
    format: str = field(default="json", metadata=_check(_choice("json", "console")))


@dataclass(slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    keepalive: KeepaliveConfig = field(default_factory=KeepaliveConfig)
    registrar: RegistrarConfig = field(default_factory=RegistrarConfig)
    state: StateConfig = field(default_factory=StateConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    dispatcher: DispatcherConfig = field(default_factory=DispatcherConfig)
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def realm(self) -> str:
        if self.registrar.realm:
            return self.registrar.realm
        return self.server.domains[0] if self.server.domains else self.advertise.strip("[]")

    @property
    def advertise(self) -> str:
        if self.server.advertise:
            return self.server.advertise
        first = self.server.listen[0]
        return f"[{first.host}]" if ":" in first.host else first.host


def _section(raw: Any, name: str, cls: type) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a table [{name}], got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown key (known: {', '.join(known)})")
        values[key] = known[key].metadata["check"](value, f"{name}.{key}")
    return cls(**values)


# section name → its dataclass, read off Config itself: a new section is declared once
SECTIONS: dict[str, type] = {f.name: type(getattr(Config(), f.name)) for f in fields(Config)}


def from_dict(raw: dict[str, Any]) -> Config:
    values = {}
    for name, body in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"{name}: unknown section (known: {', '.join(SECTIONS)})")
        values[name] = _section(body, name, SECTIONS[name])
    config = Config(**values)
    _cross_checks(config)
    return config


def _cross_checks(config: Config) -> None:
    secure = [str(s) for s in config.server.listen if s.secure]
    if secure and not (config.tls.cert_file and config.tls.key_file):
        missing = "tls.cert_file" if not config.tls.cert_file else "tls.key_file"
        raise ConfigError(f"{missing}: required by listen {', '.join(secure)}")
    reg = config.registrar
    if reg.min_expires > reg.max_expires:
        raise ConfigError(f"registrar.min_expires: {reg.min_expires} is above registrar.max_expires {reg.max_expires}")
    if reg.users == "redis" and config.state.backend != "redis":
        raise ConfigError('registrar.users: "redis" needs state.backend = "redis"')
    if reg.users and reg.users != "redis":
        from edgeproxy.state.users import UsersFileError, load_users_file

        try:
            load_users_file(reg.users, config.realm)
        except UsersFileError as err:
            raise ConfigError(f"registrar.users: {err}") from None
    pres = config.presence
    if pres.min_expires > pres.max_expires:
        raise ConfigError(f"presence.min_expires: {pres.min_expires} is above presence.max_expires {pres.max_expires}")
    throttle = config.throttle
    if throttle.mode != "off" and not throttle.upstream:
        raise ConfigError(f'throttle.upstream: required by throttle.mode = "{throttle.mode}"')
    if throttle.mode != "off" and throttle.client_expires > throttle.upstream_expires:
        raise ConfigError(f"throttle.client_expires: {throttle.client_expires} is above throttle.upstream_expires "
                          f"{throttle.upstream_expires}")
    if config.server.workers > 1:
        if config.state.backend != "redis":
            raise ConfigError(f'server.workers: {config.server.workers} processes share their state only through '
                              'Redis: needs state.backend = "redis"')
        ephemeral = [str(s) for s in config.server.listen if s.port == 0]
        if ephemeral:
            raise ConfigError(f"server.workers: {config.server.workers} processes must share fixed ports, not port 0 "
                              f"({', '.join(ephemeral)})")
    if config.state.backend == "redis" and not config.state.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"state.redis_url: expected redis://HOST:PORT/DB, got {config.state.redis_url!r}")


def read_toml(path: str, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """A TOML file's tables; `error` names the file and what is wrong with it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as err:
        raise error(f"{path}: cannot read: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise error(f"{path}: not valid TOML: {err}") from err


def load(path: str) -> Config:
    raw = read_toml(path)
    base = os.path.dirname(os.path.abspath(path))  # relative file names are relative to the config file
    for section, keys in (("tls", ("cert_file", "key_file", "ca_file")), ("registrar", ("users",))):
        table = raw.get(section)
        if isinstance(table, dict):
            for key in keys:
                value = table.get(key)
                if isinstance(value, str) and value and value != "redis" and not os.path.isabs(value):
                    table[key] = os.path.join(base, value)
    return from_dict(raw)
