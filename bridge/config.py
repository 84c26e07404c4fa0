"""Settings read from the environment (SPEC "Configuration").

:func:`load_dotenv` is called only by the entry points (``bridge.cli``), never on import, and it
never overrides what the environment already has. :class:`Settings` holds the Juhe key and never
prints it: its ``repr`` masks it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# the masks live in bridge.privacy; imported here for the callers that know them from here
from bridge.privacy import mask_mobile, mask_mobiles_in, redact_url

__all__ = ["Settings", "mask_mobile", "mask_mobiles_in", "parse_duration", "redact_url",
           "store_url"]

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
    return env.get("BRIDGE_STORE") or env.get("REDIS_URL") or "sqlite:///bridge.db"


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
    retention: float = 7 * 86400.0
    juhe_timeout: float = 10.0
    retry_base: float = 2.0
    delivery_interval: float = 0.5
    warnings: tuple[str, ...] = ()

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

        def num(name: str, default: str, low: int, high: int = 2**31) -> int:
            return _whole_number(e, name, default, low, high)

        def dur(name: str, default: str, positive: bool = False) -> float:
            return _duration(e, name, default, positive)

        store = store_url(e)
        _check_store(store, "BRIDGE_STORE" if e.get("BRIDGE_STORE") else "REDIS_URL")
        juhe_url = e.get("JUHE_URL") or "http://v.juhe.cn/sms/send"
        if not re.match(r"^https?://[^/\s]+", juhe_url):
            raise ValueError(f"JUHE_URL: expected http(s)://host/path, got {juhe_url!r}")

        tz = e.get("BRIDGE_TZ") or "Asia/Shanghai"
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"BRIDGE_TZ: unknown time zone {tz!r}") from None
        log_format = (e.get("BRIDGE_LOG_FORMAT") or "text").lower()
        if log_format not in ("text", "json"):
            raise ValueError(f"BRIDGE_LOG_FORMAT: must be text or json, not {log_format!r}")
        bind = (e.get("BRIDGE_BIND") or "0.0.0.0").strip()
        check_bind(bind, "BRIDGE_BIND")
        warnings = []
        if e.get("REDIS_URL") and e.get("BRIDGE_STORE") and e["BRIDGE_STORE"] != e["REDIS_URL"]:
            warnings.append("REDIS_URL is set but BRIDGE_STORE wins: "
                            f"{redact_url(e['BRIDGE_STORE'])} (unset BRIDGE_STORE to use Redis)")
        return cls(
            warnings=tuple(warnings),
            juhe_key=e.get("JUHE_KEY") or None,
            juhe_url=juhe_url,
            rules_path=e.get("BRIDGE_RULES") or "rules.yaml",
            store=store,
            token=e.get("BRIDGE_TOKEN") or None,
            grafana_hmac_secret=e.get("BRIDGE_GRAFANA_HMAC_SECRET") or None,
            grafana_hmac_timestamp_header=e.get("BRIDGE_GRAFANA_HMAC_TIMESTAMP_HEADER") or None,
            tz=tz,
            port=num("PORT", "8000", 1, 65535),
            bind=bind,
            workers=num("WEB_CONCURRENCY", "2", 1, 64),
            threads=num("BRIDGE_THREADS", "32", 1, 1024),
            max_body_bytes=num("BRIDGE_MAX_BODY_BYTES", "1048576", 1),
            retry_for=dur("BRIDGE_RETRY_FOR", "1h"),
            log_format=log_format,
            retention=dur("BRIDGE_RETENTION", "7d"),
            juhe_timeout=dur("BRIDGE_JUHE_TIMEOUT", "10s", positive=True),
            retry_base=dur("BRIDGE_RETRY_BASE", "2s", positive=True),
            delivery_interval=dur("BRIDGE_DELIVERY_INTERVAL", "0.5s", positive=True),
        )


def _whole_number(e: Mapping[str, str], name: str, default: str, low: int, high: int) -> int:
    """``e[name]`` (or ``default``) as an int from ``low`` to ``high``; ValueError naming
    ``name`` otherwise."""
    try:
        value = int(e.get(name) or default)
    except ValueError:
        raise ValueError(f"{name}: not a whole number: {e.get(name)!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name}: must be from {low} to {high}, not {value}")
    return value


def _duration(e: Mapping[str, str], name: str, default: str, positive: bool) -> float:
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
    ``sqlite:///PATH`` in an existing folder or a well-formed ``redis://`` URL."""
    if not store.startswith(("sqlite:///", "redis://", "rediss://", "unix://")) or \
            store == "sqlite:///":
        raise ValueError(f"{where}: expected sqlite:///PATH or redis://[:password@]host:"
                         f"port/db, got {redact_url(store).split('://')[0]}://...")
    if store.startswith("sqlite:///"):
        folder = os.path.dirname(os.path.abspath(store[len("sqlite:///"):]))
        if not os.path.isdir(folder):
            raise ValueError(f"{where}: the folder {folder} does not exist ({store}); "
                             "create it first (a mistyped path must not start an empty "
                             "store)")
    if store.startswith(("redis://", "rediss://")):
        try:
            parts = urlsplit(store)
            _ = parts.port
            db = parts.path.strip("/")
            if not parts.hostname or (db and not db.isdigit()):
                raise ValueError("expected redis://[:password@]host:port/db")
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}: {redact_url(store)}") from None
