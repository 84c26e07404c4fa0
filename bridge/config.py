"""Settings read from the environment (docs/configuration.md).

:func:`load_dotenv` is called only by the entry points (``bridge.cli``), never on import, and it
never overrides what the environment already has. :class:`Settings` holds the Juhe key and never
prints it: its ``repr`` masks it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.privacy import redact_url

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> float:
    """Parse a Prometheus-style duration (``90s``, ``1h30m``, ``2m``, ``500ms``) into seconds.

    A bare number is seconds. Raises ``ValueError`` for anything else or a negative value.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"negative duration: {text!r}")
        return float(text)
    s = str(text).strip()
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if value < 0:
            raise ValueError(f"negative duration: {text!r}")
        return value
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"not a duration (like 90s, 5m, 1h30m): {text!r}")
    return total


def store_url(env: Mapping[str, str]) -> str:
    """The store URL: ``BRIDGE_STORE``, else ``REDIS_URL`` (PaaS add-ons), else SQLite."""
    return env.get("BRIDGE_STORE") or env.get("REDIS_URL") or Settings.store


def check_bind(address: str, where: str) -> None:
    """Refuse a bind address that is not an IPv4/IPv6 address or a host name (no port: the
    port is ``PORT``). Raises ``ValueError`` naming ``where``."""
    import ipaddress

    try:
        ipaddress.ip_address(address.strip("[]"))
        return
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})", address):
        raise ValueError(f"{where}: expected an address such as 0.0.0.0 or 127.0.0.1 "
                         f"(the port is PORT), got {address!r}")


#: The shortest ``BRIDGE_TOKEN`` accepted at start, in characters (docs/configuration.md).
TOKEN_MIN = 16

#: URL schemes of a Redis store (``unix://`` is a local socket).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")


@dataclass(frozen=True)
class RedisURL:
    """A Redis store URL read by :func:`parse_redis_url`.

    ``topology`` is ``redis`` (one server: ``redis://``, ``rediss://``, ``unix://``; ``url`` is
    handed to redis-py as it is), ``sentinel`` (``hosts`` are the sentinels, ``service`` the
    master's name as they know it) or ``cluster`` (``hosts`` are seed nodes of a Redis Cluster).
    ``username``/``password`` are those of the Redis data nodes (percent-decoded); sentinels are
    asked without a password unless ``sentinel_password`` (the ``?sentinel_password=`` query
    parameter) is given. The password never appears in ``repr``.
    """

    topology: Literal["redis", "sentinel", "cluster"]
    url: str = field(repr=False)
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``host`` or ``[v6]:port`` -> ``(host, port)``; ``ValueError`` if bad."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\[\]/\s]+)(?::(\d+))?", text)
    if not m:
        raise ValueError(f"expected host:port, got {text!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4) or default_port)
    if not 1 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def parse_redis_url(url: str) -> RedisURL:
    """Read a Redis store URL (``BRIDGE_STORE``, docs/configuration.md, Rules and store).

    * ``redis://[[user]:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path?db=N``;
    * ``redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/db]``: the
      sentinels (port 26379 when left out) and the name of the master they watch;
    * ``redis+cluster://[[user]:password@]host:port[,host:port...]``: seed nodes of a Redis
      Cluster (port 6379 when left out); a cluster has only database 0 (``/0`` is allowed).

    Raises ``ValueError`` saying what is wrong (never containing the password).
    """
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _single_server_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis+sentinel", "redis+cluster"):
        raise ValueError("expected redis://, rediss://, unix://, redis+sentinel:// or "
                         "redis+cluster://")
    return _ha_url(url, scheme, rest)


def _single_server_url(url: str) -> RedisURL:
    """``redis://``, ``rediss://`` or ``unix://`` (see :func:`parse_redis_url`)."""
    if url.startswith(("redis://", "rediss://")):
        try:
            parts = urlsplit(url)
            _ = parts.port
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        db = parts.path.strip("/")
        if not parts.hostname or (db and not db.isdigit()):
            raise ValueError("expected redis://[:password@]host:port/db")
        return RedisURL("redis", url, db=int(db or 0))
    if url.startswith("unix://"):
        if not urlsplit(url).path:
            raise ValueError("expected unix:///path/to/redis.sock[?db=N]")
    return RedisURL("redis", url)


def _userinfo(netloc: str, form: str) -> tuple[str, str | None, str | None]:
    """``[[user]:password@]hosts`` -> ``(hosts, user, password)``."""
    if "@" not in netloc:
        return netloc, None, None
    userinfo, _, netloc = netloc.rpartition("@")
    user, colon, pw = userinfo.partition(":")
    if not colon:  # "secret@host": a password without its colon would be taken as a user
        raise ValueError(f"expected :password@ before the hosts (expected {form})")
    return netloc, unquote(user) or None, unquote(pw)


def _ha_url(url: str, scheme: str, rest: str) -> RedisURL:
    """``redis+sentinel://`` or ``redis+cluster://`` after the scheme (see
    :func:`parse_redis_url`)."""
    form = ("redis+sentinel://[:password@]host:port[,host:port...]/SERVICE[/db]"
            if scheme == "redis+sentinel" else "redis+cluster://[:password@]host:port[,...]")
    rest, _, query = rest.partition("?")
    sentinel_password = None
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        if name == "sentinel_password" and scheme == "redis+sentinel":
            sentinel_password = unquote(value)
        else:
            raise ValueError(f"unknown parameter {name!r} (expected {form})")
    netloc, _, path = rest.partition("/")
    netloc, username, password = _userinfo(netloc, form)
    if not netloc:
        raise ValueError(f"no host (expected {form})")
    default_port = 26379 if scheme == "redis+sentinel" else 6379
    hosts = tuple(_host_port(h.strip(), default_port) for h in netloc.split(","))
    segments = [p for p in path.split("/")] if path else []
    if scheme == "redis+sentinel":
        if not segments or not segments[0] or len(segments) > 2 or (
                len(segments) == 2 and not segments[1].isdigit()):
            raise ValueError(f"expected the master's name after the hosts, then an optional "
                             f"db number (expected {form})")
        return RedisURL("sentinel", url, hosts, unquote(segments[0]),
                        int(segments[1]) if len(segments) == 2 else 0, username, password,
                        sentinel_password)
    if segments not in ([], [""], ["0"]):
        raise ValueError(f"a Redis Cluster has only database 0 (expected {form})")
    return RedisURL("cluster", url, hosts, "", 0, username, password)


@dataclass(frozen=True)
class Settings:
    """Everything the environment configures. Durations are seconds, sizes bytes."""

    juhe_key: str | None = field(default=None, repr=False)
    juhe_url: str = "http://v.juhe.cn/sms/send"
    rules_path: str = "rules.yaml"
    store: str = "sqlite:///bridge.db"
    token: str | None = field(default=None, repr=False)
    grafana_hmac_secret: str | None = field(default=None, repr=False)
    grafana_hmac_timestamp_header: str | None = None
    tz: str = "Asia/Shanghai"
    port: int = 8000
    bind: str = "0.0.0.0"
    workers: int = 2
    threads: int = 32
    max_body_bytes: int = 1048576
    retry_for: float = 3600.0
    log_format: str = "text"
    #: ``debug`` adds one line per decision to the INFO line per webhook
    log_level: str = "info"
    retention: float = 7 * 86400.0
    juhe_timeout: float = 10.0
    retry_base: float = 2.0
    delivery_interval: float = 0.5
    #: a delivery loop with no finished pass for this long is hung (docs/operations.md)
    delivery_stall: float = 60.0
    redis_wait: int = 0
    redis_wait_timeout: float = 1.0
    #: Aliyun credentials and endpoints (docs/providers.md); never printed
    aliyun_access_key_id: str | None = field(default=None, repr=False)
    aliyun_access_key_secret: str | None = field(default=None, repr=False)
    aliyun_sms_url: str = "https://dysmsapi.aliyuncs.com/"
    aliyun_voice_url: str = "https://dyvmsapi.aliyuncs.com/"
    #: Tencent Cloud credentials, region and endpoints (docs/providers.md); never printed
    tencent_secret_id: str | None = field(default=None, repr=False)
    tencent_secret_key: str | None = field(default=None, repr=False)
    tencent_region: str = "ap-guangzhou"
    tencent_sms_url: str = "https://sms.tencentcloudapi.com/"
    tencent_vms_url: str = "https://vms.tencentcloudapi.com/"
    #: seconds of transient failure of Juhe before an SMS goes through its template's fallback
    failover_after: float = 120.0
    #: Alertmanager's base URL: acknowledging silences the alert there (docs/oncall.md)
    alertmanager_url: str | None = None
    #: how long such a silence lasts, seconds
    ack_silence: float = 4 * 3600.0
    warnings: tuple[str, ...] = ()

    @property
    def secrets(self) -> list[str | None]:
        """Every secret the environment configures (Juhe key, token, HMAC secret, provider
        credentials), for the log scrubber."""
        return [self.juhe_key, self.token, self.grafana_hmac_secret, self.aliyun_access_key_id,
                self.aliyun_access_key_secret, self.tencent_secret_id, self.tencent_secret_key]

    @property
    def dry_run(self) -> bool:
        """True when no Juhe key is set: nothing is sent, each SMS is logged instead."""
        return not self.juhe_key

    @property
    def zone(self) -> ZoneInfo:
        """``BRIDGE_TZ`` as a ZoneInfo."""
        return ZoneInfo(self.tz)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``).

        Raises ``ValueError`` naming the variable when a value cannot be read.
        """
        e = os.environ if env is None else env
        d = cls()  # the defaults: written once, in the fields above

        def num(name: str, default: int | str, low: int, high: int = 2**31) -> int:
            return _whole_number(e, name, default, low, high)

        def dur(name: str, default: float | str, positive: bool = False) -> float:
            return _duration(e, name, default, positive)

        store = store_url(e)
        _check_store(store, "BRIDGE_STORE" if e.get("BRIDGE_STORE") else "REDIS_URL")
        redis_wait = num("BRIDGE_REDIS_WAIT", d.redis_wait, 0, 64)
        redis_wait_timeout = dur("BRIDGE_REDIS_WAIT_TIMEOUT", d.redis_wait_timeout, positive=True)
        juhe_url = e.get("JUHE_URL") or d.juhe_url
        if not re.match(r"^https?://[^/\s]+", juhe_url):
            raise ValueError(f"JUHE_URL: expected http(s)://host/path, got {juhe_url!r}")

        tz = e.get("BRIDGE_TZ") or d.tz
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"BRIDGE_TZ: unknown time zone {tz!r}") from None
        log_format = (e.get("BRIDGE_LOG_FORMAT") or d.log_format).lower()
        if log_format not in ("text", "json"):
            raise ValueError(f"BRIDGE_LOG_FORMAT: must be text or json, not {log_format!r}")
        log_level = (e.get("BRIDGE_LOG_LEVEL") or d.log_level).lower()
        if log_level not in ("debug", "info", "warning", "error"):
            raise ValueError("BRIDGE_LOG_LEVEL: must be debug, info, warning or error, not "
                             f"{log_level!r}")
        token = e.get("BRIDGE_TOKEN") or None
        if token is not None and len(token) < TOKEN_MIN:
            raise ValueError(
                f"BRIDGE_TOKEN: must be at least {TOKEN_MIN} characters, not {len(token)}: a"
                " short token can be guessed, and the log scrubber masks the token wherever it"
                " appears, so a short one garbles every log line (make one with"
                " `openssl rand -hex 16`)")
        alertmanager_url = _alertmanager_url(e)
        bind = (e.get("BRIDGE_BIND") or d.bind).strip()
        check_bind(bind, "BRIDGE_BIND")
        warnings = []
        if e.get("REDIS_URL") and e.get("BRIDGE_STORE") and e["BRIDGE_STORE"] != e["REDIS_URL"]:
            warnings.append("REDIS_URL is set but BRIDGE_STORE wins: "
                            f"{redact_url(e['BRIDGE_STORE'])} (unset BRIDGE_STORE to use Redis)")
        if redis_wait and not store.startswith(REDIS_SCHEMES):
            warnings.append(f"BRIDGE_REDIS_WAIT={redis_wait} has no effect: the store is not "
                            "Redis")
        return cls(
            warnings=tuple(warnings),
            juhe_key=e.get("JUHE_KEY") or None,
            juhe_url=juhe_url,
            rules_path=e.get("BRIDGE_RULES") or d.rules_path,
            store=store,
            token=token,
            grafana_hmac_secret=e.get("BRIDGE_GRAFANA_HMAC_SECRET") or None,
            grafana_hmac_timestamp_header=e.get("BRIDGE_GRAFANA_HMAC_TIMESTAMP_HEADER") or None,
            tz=tz,
            port=num("PORT", d.port, 1, 65535),
            bind=bind,
            workers=num("WEB_CONCURRENCY", d.workers, 1, 64),
            threads=num("BRIDGE_THREADS", d.threads, 1, 1024),
            max_body_bytes=num("BRIDGE_MAX_BODY_BYTES", d.max_body_bytes, 1),
            retry_for=dur("BRIDGE_RETRY_FOR", d.retry_for),
            log_format=log_format,
            log_level=log_level,
            retention=dur("BRIDGE_RETENTION", d.retention),
            juhe_timeout=dur("BRIDGE_JUHE_TIMEOUT", d.juhe_timeout, positive=True),
            retry_base=dur("BRIDGE_RETRY_BASE", d.retry_base, positive=True),
            delivery_interval=dur("BRIDGE_DELIVERY_INTERVAL", d.delivery_interval, positive=True),
            delivery_stall=dur("BRIDGE_DELIVERY_STALL", d.delivery_stall, positive=True),
            redis_wait=redis_wait,
            redis_wait_timeout=redis_wait_timeout,
            aliyun_access_key_id=e.get("ALIYUN_ACCESS_KEY_ID") or None,
            aliyun_access_key_secret=e.get("ALIYUN_ACCESS_KEY_SECRET") or None,
            aliyun_sms_url=_http_url(e, "ALIYUN_SMS_URL", d.aliyun_sms_url),
            aliyun_voice_url=_http_url(e, "ALIYUN_VOICE_URL", d.aliyun_voice_url),
            tencent_secret_id=e.get("TENCENTCLOUD_SECRET_ID") or None,
            tencent_secret_key=e.get("TENCENTCLOUD_SECRET_KEY") or None,
            tencent_region=e.get("TENCENTCLOUD_REGION") or d.tencent_region,
            tencent_sms_url=_http_url(e, "TENCENT_SMS_URL", d.tencent_sms_url),
            tencent_vms_url=_http_url(e, "TENCENT_VMS_URL", d.tencent_vms_url),
            failover_after=dur("BRIDGE_FAILOVER_AFTER", d.failover_after),
            alertmanager_url=alertmanager_url,
            ack_silence=dur("BRIDGE_ACK_SILENCE", d.ack_silence, positive=True),
        )


def _http_url(e: Mapping[str, str], name: str, default: str) -> str:
    """``e[name]`` (or ``default``) checked to be ``http(s)://host...``; ValueError naming
    ``name`` otherwise."""
    url = e.get(name) or default
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(f"{name}: expected http(s)://host/path, got {redact_url(url)!r}")
    return url


def _alertmanager_url(e: Mapping[str, str]) -> str | None:
    """``BRIDGE_ALERTMANAGER_URL`` without a trailing slash, or ``None`` when unset; ValueError
    naming it when it is not an http(s) URL (docs/oncall.md, Silences in Alertmanager)."""
    url = (e.get("BRIDGE_ALERTMANAGER_URL") or "").strip().rstrip("/") or None
    if url is not None and not re.match(r"^https?://[^/\s]+", url):
        raise ValueError("BRIDGE_ALERTMANAGER_URL: expected http(s)://host:port, got "
                         f"{redact_url(url)!r}")
    return url


def _whole_number(e: Mapping[str, str], name: str, default: int | str, low: int,
                  high: int) -> int:
    """``e[name]`` (or ``default``) as an int from ``low`` to ``high``; ValueError naming
    ``name`` otherwise."""
    try:
        value = int(e.get(name) or default)
    except ValueError:
        raise ValueError(f"{name}: not a whole number: {e.get(name)!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name}: must be from {low} to {high}, not {value}")
    return value


def _duration(e: Mapping[str, str], name: str, default: float | str, positive: bool) -> float:
    """``e[name]`` (or ``default``) as seconds (:func:`parse_duration`); ValueError naming
    ``name`` when unreadable, or not more than 0 where ``positive``."""
    try:
        value = parse_duration(e.get(name) or default)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if positive and value <= 0:
        raise ValueError(f"{name}: must be more than 0")
    return value


def _check_store(store: str, where: str) -> None:
    """Raise ValueError naming ``where`` (the variable it came from) unless ``store`` is a
    ``sqlite:///PATH`` in an existing folder or a well-formed Redis URL (plain, Sentinel or
    Cluster: :func:`parse_redis_url`)."""
    if not store.startswith(("sqlite:///", *REDIS_SCHEMES)) or store == "sqlite:///":
        raise ValueError(f"{where}: expected sqlite:///PATH or redis://[:password@]host:"
                         f"port/db (or redis+sentinel://..., redis+cluster://...), got "
                         f"{redact_url(store).split('://')[0]}://...")
    if store.startswith("sqlite:///"):
        folder = os.path.dirname(os.path.abspath(store[len("sqlite:///"):]))
        if not os.path.isdir(folder):
            raise ValueError(f"{where}: the folder {folder} does not exist ({store}); "
                             "create it first (a mistyped path must not start an empty "
                             "store)")
    if store.startswith(REDIS_SCHEMES):
        try:
            parse_redis_url(store)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}: {redact_url(store)}") from None
