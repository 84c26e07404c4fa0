"""Settings from the environment: defaults, every variable, and a clear error naming the
variable for every bad value (found by a trial run: several crashed with a traceback)."""

from __future__ import annotations

import pytest

from bridge.config import (
    Settings,
    parse_duration,
    parse_redis_url,
)
from bridge.privacy import mask_mobile, mask_mobiles_in, redact_url


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.juhe_key, s.juhe_url, s.rules_path, s.store, s.token, s.tz, s.port, s.workers,
            s.max_body_bytes, s.retry_for, s.log_format, s.dry_run) == (
        None, "http://v.juhe.cn/sms/send", "rules.yaml", "sqlite:///bridge.db", None,
        "Asia/Shanghai", 8000, 2, 1048576, 3600.0, "text", True)
    assert (s.bind, s.threads) == ("0.0.0.0", 32)
    assert "sekrit" not in repr(Settings.from_env({"JUHE_KEY": "sekrit",
                                                   "BRIDGE_TOKEN": "sekrit-sekrit-sekrit"}))


def test_redis_url_is_used_unless_bridge_store_wins() -> None:
    assert Settings.from_env({"REDIS_URL": "redis://:pw@h:6379/0"}).store == "redis://:pw@h:6379/0"
    s = Settings.from_env({"REDIS_URL": "redis://h:6379/0", "BRIDGE_STORE": "sqlite:///x.db"})
    assert s.store == "sqlite:///x.db"
    assert s.warnings == ("REDIS_URL is set but BRIDGE_STORE wins: sqlite:///x.db (unset "
                          "BRIDGE_STORE to use Redis)",)


@pytest.mark.parametrize(("env", "error"), [
    ({"PORT": "abc"}, "PORT: not a whole number: 'abc'"),
    ({"PORT": "99999"}, "PORT: must be from 1 to 65535, not 99999"),
    ({"PORT": "-1"}, "PORT: must be from 1 to 65535, not -1"),
    ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY: must be from 1 to 64, not 0"),
    ({"BRIDGE_MAX_BODY_BYTES": "0"}, "BRIDGE_MAX_BODY_BYTES: must be from 1 to"),
    ({"BRIDGE_RETRY_FOR": "forever"}, "BRIDGE_RETRY_FOR: not a duration"),
    ({"BRIDGE_JUHE_TIMEOUT": "0"}, "BRIDGE_JUHE_TIMEOUT: must be more than 0"),
    ({"BRIDGE_STORE": "postgres://u:pw@db/x"}, "BRIDGE_STORE: expected sqlite:///PATH or redis"),
    ({"BRIDGE_STORE": "sqlite://"}, "BRIDGE_STORE: expected sqlite:///PATH"),
    ({"REDIS_URL": "memcached://x"}, "REDIS_URL: expected sqlite:///PATH or redis"),
    ({"JUHE_URL": "notaurl"}, "JUHE_URL: expected http(s)://host/path, got 'notaurl'"),
    ({"BRIDGE_STORE": "redis://:pw@h:notaport/0"}, "BRIDGE_STORE: Port could not be cast"),
    ({"BRIDGE_STORE": "redis://h:99999/0"}, "BRIDGE_STORE: Port out of range"),
    ({"BRIDGE_STORE": "redis://h:6379/abc"}, "BRIDGE_STORE: expected redis://[:password@]host"),
    ({"BRIDGE_STORE": "redis+sentinel://:pw@h1:26379,h2:26379"},
     "BRIDGE_STORE: expected the master's name after the hosts"),
    ({"BRIDGE_STORE": "redis+sentinel://:pw@h1:26379,h2:notaport/mymaster"},
     "BRIDGE_STORE: expected host:port, got 'h2:notaport'"),
    ({"BRIDGE_STORE": "redis+sentinel://:pw@h1:26379/mymaster/x"},
     "BRIDGE_STORE: expected the master's name after the hosts, then an optional db number"),
    ({"BRIDGE_STORE": "redis+sentinel://:pw@h1:70000/mymaster"},
     "BRIDGE_STORE: port out of range in 'h1:70000'"),
    ({"BRIDGE_STORE": "redis+sentinel://h1:26379/mymaster?sentinel_password=pw&timeout=1"},
     "BRIDGE_STORE: unknown parameter 'timeout'"),
    ({"BRIDGE_STORE": "redis+cluster://:pw@a:7000,b:7001/3"},
     "BRIDGE_STORE: a Redis Cluster has only database 0"),
    ({"BRIDGE_STORE": "redis+cluster://:pw@"}, "BRIDGE_STORE: no host"),
    ({"BRIDGE_STORE": "redis+cluster://a:7000,,b:7001"}, "BRIDGE_STORE: expected host:port"),
    ({"REDIS_URL": "redis+clustr://a:7000"}, "REDIS_URL: expected sqlite:///PATH or redis"),
    ({"BRIDGE_REDIS_WAIT": "one"}, "BRIDGE_REDIS_WAIT: not a whole number: 'one'"),
    ({"BRIDGE_REDIS_WAIT": "-1"}, "BRIDGE_REDIS_WAIT: must be from 0 to 64, not -1"),
    ({"BRIDGE_REDIS_WAIT_TIMEOUT": "0"}, "BRIDGE_REDIS_WAIT_TIMEOUT: must be more than 0"),
    ({"BRIDGE_REDIS_WAIT_TIMEOUT": "soon"}, "BRIDGE_REDIS_WAIT_TIMEOUT: not a duration"),
    ({"BRIDGE_TZ": "Mars/Olympus"}, "BRIDGE_TZ: unknown time zone 'Mars/Olympus'"),
    ({"BRIDGE_LOG_FORMAT": "xml"}, "BRIDGE_LOG_FORMAT: must be text or json, not 'xml'"),
    ({"BRIDGE_LOG_LEVEL": "loud"},
     "BRIDGE_LOG_LEVEL: must be debug, info, warning or error, not 'loud'"),
    ({"BRIDGE_STORE": "sqlite:////nonexistent/dir/x.db"},
     "BRIDGE_STORE: the folder /nonexistent/dir does not exist (sqlite:////nonexistent/dir/x.db)"),
    ({"BRIDGE_BIND": "0.0.0.0:80"}, "BRIDGE_BIND: expected an address such as 0.0.0.0"),
    ({"BRIDGE_THREADS": "0"}, "BRIDGE_THREADS: must be from 1 to 1024, not 0"),
    ({"BRIDGE_TOKEN": "pw"}, "BRIDGE_TOKEN: must be at least 16 characters, not 2: a short"
     " token can be guessed, and the log scrubber masks the token wherever it appears"),
    ({"BRIDGE_TOKEN": "pw" * 7 + "x"}, "BRIDGE_TOKEN: must be at least 16 characters, not 15"),
])
def test_bad_values_name_the_variable(env: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(error)
    assert "pw" not in str(info.value)


def test_redis_urls_of_every_topology() -> None:
    s = Settings.from_env({"BRIDGE_STORE": "redis+sentinel://:p%40ss@10.0.0.1:26379,"
                           "10.0.0.2:26380,sentinel-3/mymaster/2", "BRIDGE_REDIS_WAIT": "1",
                           "BRIDGE_REDIS_WAIT_TIMEOUT": "500ms"})
    assert (s.redis_wait, s.redis_wait_timeout) == (1, 0.5)
    u = parse_redis_url(s.store)
    assert (u.topology, u.hosts, u.service, u.db, u.username, u.password) == (
        "sentinel", (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("sentinel-3", 26379)),
        "mymaster", 2, None, "p@ss")
    assert "p@ss" not in repr(u) and "p%40ss" not in repr(u)
    u = parse_redis_url("redis+sentinel://h:1/m?sentinel_password=s%3Dx")
    assert (u.service, u.db, u.password, u.sentinel_password) == ("m", 0, None, "s=x")
    u = parse_redis_url("redis+cluster://bridge:pw@[::1]:7000,node-2:7001/0")
    assert (u.topology, u.hosts, u.username, u.password) == (
        "cluster", (("::1", 7000), ("node-2", 7001)), "bridge", "pw")
    assert parse_redis_url("redis+cluster://node-1").hosts == (("node-1", 6379),)
    assert parse_redis_url("rediss://:pw@h:6380/3").topology == "redis"
    assert Settings.from_env({"BRIDGE_REDIS_WAIT": "1"}).warnings == (
        "BRIDGE_REDIS_WAIT=1 has no effect: the store is not Redis",)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800), ("1w", 604800),
    ("0", 0), ("1.5", 1.5), (30, 30),
])
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 m", "m5", "-1", "1h-5m", "5x"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_masking() -> None:
    assert mask_mobile("13800138000") == "138****8000"
    assert mask_mobile("123") == "****"
    assert mask_mobiles_in("to 13800138000 and 13900139000; id 213800138000x") == (
        "to 138****8000 and 139****9000; id 213800138000x")
    assert mask_mobiles_in("+8613800138000 008613900139000 86-13700137000") == (
        "+86138****8000 0086139****9000 86-137****7000")
    assert redact_url("redis://:secret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("redis+sentinel://:secret@h1:1,h2:2/m?sentinel_password=s2") == (
        "redis+sentinel://:***@h1:1,h2:2/m?sentinel_password=***")


def test_text_logs_cannot_be_forged_by_alert_text() -> None:
    import logging

    from bridge.logs import TextFormatter

    record = logging.LogRecord("bridge", logging.INFO, __file__, 1, "alert %s",
                               ("x\n2026-11-29 ERROR forged\r\u2028y\x85z",), None)
    line = TextFormatter("%(levelname)s %(message)s").format(record)
    assert line == "INFO alert x\\n2026-11-29 ERROR forged\\r\\u2028y\\u0085z"
    assert line.splitlines() == [line]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_logs_escape_hostile_characters(fmt: str) -> None:
    import logging

    from bridge.logs import JsonFormatter, TextFormatter

    hostile = "a\x00b\x07c\x1bd\x7fe\x9bf\u202eg\u2066h\u200ei\tj \U0001F468\u200d\U0001F469"
    record = logging.LogRecord("bridge", logging.INFO, __file__, 1, "alert %s", (hostile,), None)
    if fmt == "text":
        line = TextFormatter("%(message)s").format(record)
        assert line == ("alert a\\u0000b\\u0007c\\u001bd\\u007fe\\u009bf\\u202eg\\u2066h"
                        "\\u200ei\tj "
                        "\U0001F468\\u200d\U0001F469")
    else:
        line = JsonFormatter().format(record)
        import json
        assert json.loads(line)["msg"] == "alert " + hostile
    assert not any(ord(c) < 0x20 and c != "\t" or 0x7f <= ord(c) <= 0x9f
                   or c in "\u202e\u2066\u200e\u200d" for c in line), line
