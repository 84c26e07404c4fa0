"""Issue #4, security: who may call the bridge (BRIDGE_TOKEN, Grafana's HMAC signature), the
body size limit, JSON for every error answer, arbitrary bodies never answered 5xx, and the Juhe
key never shown (logs, errors, answers, ``bridge render``) on any Juhe error path.

The auth, leak and a smaller fuzz run go through the real ``bridge serve``; the bulk of the
fuzzing goes through Flask's test client (the same strategies as ``bench/fuzz_webhooks.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import sys
import time
import traceback
from base64 import b64encode
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from conftest import CATCH_ALL, KEY, free_port, wait_until
from fakejuhe import FakeJuhe
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import fuzz_webhooks as fw  # noqa: E402

from bridge.errors import JuheError  # noqa: E402
from bridge.providers.juhe import JuheClient  # noqa: E402
from bridge.web import guard  # noqa: E402

TOKEN = "tok-9c1e77-5b20d4ae"
HMAC_SECRET = "hmac-secret-31d4"
TS_HEADER = "X-Grafana-Alerting-Timestamp"
SIG_HEADER = "X-Grafana-Alerting-Signature"
MOBILE = "13800138000"
MASKED = "138****8000"
UNAUTHORIZED = {"error": "unauthorized: send Authorization: Bearer TOKEN or basic auth"}


def am_body(name: str) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": name},
         "startsAt": "2026-03-01T10:00:00Z"}]}).encode()


def gf_body(name: str) -> bytes:
    return json.dumps({"version": "1", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": name},
         "startsAt": "2026-03-01T10:00:00Z"}]}).encode()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def signed(body: bytes, ts: str | None, secret: str = HMAC_SECRET) -> dict[str, str]:
    message = body if ts is None else ts.encode() + b":" + body
    headers = {SIG_HEADER: hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()}
    if ts is not None:
        headers[TS_HEADER] = ts
    return headers


def settle(fake: FakeJuhe, n: int, quiet: float = 0.6) -> list[dict[str, Any]]:
    fake.wait_for(n, timeout=10)
    time.sleep(quiet)
    return fake.messages


# -- auth through the real server ---------------------------------------------------------------

def now_ts(offset: float = 0) -> str:
    return str(int(time.time() + offset))


#: (id, path, body name, headers(body) -> dict, expected status, expected error or None)
AUTH_CASES: list[tuple[str, str, str, Any, int, str | None]] = [
    ("am-none", "alertmanager", "AmNone", lambda b: {}, 401, UNAUTHORIZED["error"]),
    ("am-wrong-bearer", "alertmanager", "AmWrong", lambda b: bearer("nope"), 401,
     UNAUTHORIZED["error"]),
    ("am-token-prefix", "alertmanager", "AmPrefix", lambda b: bearer(TOKEN[:-1]), 401,
     UNAUTHORIZED["error"]),
    ("am-wrong-basic", "alertmanager", "AmWrongBasic", lambda b: basic(TOKEN, "nope"), 401,
     UNAUTHORIZED["error"]),
    ("am-other-scheme", "alertmanager", "AmScheme", lambda b: {"Authorization": f"Token {TOKEN}"},
     401, UNAUTHORIZED["error"]),
    ("am-bearer", "alertmanager", "AmBearer", lambda b: bearer(), 200, None),
    ("am-basic", "alertmanager", "AmBasic", lambda b: basic("alertmanager", TOKEN), 200, None),
    ("gf-no-token", "grafana", "GfNoToken", lambda b: signed(b, now_ts()), 401,
     UNAUTHORIZED["error"]),
    ("gf-unsigned", "grafana", "GfUnsigned", lambda b: bearer(), 401,
     f"missing {SIG_HEADER}"),
    ("gf-bad-signature", "grafana", "GfBad",
     lambda b: {**bearer(), **signed(b, now_ts(), secret="wrong")}, 401,
     f"invalid {SIG_HEADER}"),
    ("gf-signed-other-body", "grafana", "GfOther",
     lambda b: {**bearer(), **signed(b + b" ", now_ts())}, 401, f"invalid {SIG_HEADER}"),
    ("gf-body-only-signature", "grafana", "GfNoTs", lambda b: {**bearer(), **signed(b, None)},
     401, f"missing {TS_HEADER}"),
    ("gf-stale", "grafana", "GfStale", lambda b: {**bearer(), **signed(b, now_ts(-301 - 5))},
     401, f"{TS_HEADER} is more than 300s away from now"),
    ("gf-future", "grafana", "GfFuture", lambda b: {**bearer(), **signed(b, now_ts(+306))},
     401, f"{TS_HEADER} is more than 300s away from now"),
    ("gf-nan-timestamp", "grafana", "GfNan", lambda b: {**bearer(), **signed(b, "nan")},
     401, f"{TS_HEADER} is not a UNIX timestamp"),
    ("gf-good", "grafana", "GfGood", lambda b: {**bearer(), **signed(b, now_ts(-200))}, 200,
     None),
    ("gf-good-basic-ms", "grafana", "GfGoodMs",
     lambda b: {**basic("grafana", TOKEN), **signed(b, str(int(time.time() * 1000)))}, 200,
     None),
]


def test_auth_paths_and_401_stores_nothing(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bp = make_bridge(CATCH_ALL, BRIDGE_TOKEN=TOKEN, BRIDGE_GRAFANA_HMAC_SECRET=HMAC_SECRET,
                     BRIDGE_GRAFANA_HMAC_TIMESTAMP_HEADER=TS_HEADER)
    accepted = []
    for case_id, source, name, headers, status, err in AUTH_CASES:
        body = am_body(name) if source == "alertmanager" else gf_body(name)
        r = bp.post(f"/webhook/{source}", body, headers=headers(body))
        assert (r.status_code, r.headers["Content-Type"]) == (status, "application/json"), \
            (case_id, r.text)
        if status == 200:
            assert r.json() == {"alerts": 1, "queued": 1, "suppressed": 0, "held": 0}, case_id
            accepted.append(name)
        else:
            assert r.json() == {"error": err}, case_id
        if err == UNAUTHORIZED["error"]:
            assert r.headers["WWW-Authenticate"] == 'Bearer realm="bridge", Basic realm="bridge"'
    assert accepted == ["AmBearer", "AmBasic", "GfGood", "GfGoodMs"]

    # the API and the reload are behind the same token; health and metrics are not
    assert bp.get("/api/notifications").json() == UNAUTHORIZED
    assert bp.get("/api/notifications", headers=bearer("nope")).status_code == 401
    assert bp.post("/-/reload", b"").status_code == 401
    assert bp.get("/healthz").status_code == 200
    assert bp.get("/metrics").status_code == 200

    # every 401 stored nothing and paged nobody
    msgs = settle(fake_juhe, len(accepted))
    assert sorted(m["vars"]["name"] for m in msgs) == sorted(accepted)
    api = bp.get("/api/notifications", headers=bearer()).json()["notifications"]
    assert sorted(n["alertname"] for n in api) == sorted(accepted)
    assert {n["mobile"] for n in api} == {MASKED}
    log = bp.log()
    assert TOKEN not in log and HMAC_SECRET not in log
    assert log.count("401 for POST /webhook/") == 6
    assert log.count("401 grafana webhook: ") == 7


@pytest.fixture(scope="module")
def hmac_client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An in-process app with the body-only Grafana HMAC (no timestamp header), no token."""
    return fw.make_client(tmp_path_factory.mktemp("hmac"),
                          BRIDGE_GRAFANA_HMAC_SECRET=HMAC_SECRET)


@pytest.mark.parametrize(("headers", "status", "error"), [
    pytest.param(lambda b: signed(b, None), 200, None, id="good"),
    pytest.param(lambda b: {SIG_HEADER: signed(b, None)[SIG_HEADER].upper()}, 200, None,
                 id="good-uppercase-hex"),
    pytest.param(lambda b: {}, 401, f"missing {SIG_HEADER}", id="missing"),
    pytest.param(lambda b: signed(b, None, secret="other"), 401, f"invalid {SIG_HEADER}",
                 id="wrong-secret"),
    pytest.param(lambda b: {SIG_HEADER: "zz" * 32}, 401, f"invalid {SIG_HEADER}", id="not-hex"),
    pytest.param(lambda b: {SIG_HEADER: "é"}, 401, f"invalid {SIG_HEADER}", id="non-ascii"),
])
def test_grafana_hmac_of_body(hmac_client: Any, headers: Any, status: int,
                              error: str | None) -> None:
    body = gf_body(f"Hmac{status}{error}")
    r = hmac_client.post("/webhook/grafana", data=body, headers=headers(body))
    assert r.status_code == status
    if error is not None:
        assert r.get_json() == {"error": error}
    # Alertmanager's webhook is not signed: the secret does not apply to it
    assert hmac_client.post("/webhook/alertmanager", data=am_body("NotSigned")).status_code == 200


@pytest.mark.parametrize(("header", "ok"), [
    (f"Bearer {TOKEN}", True), (f"bearer   {TOKEN}  ", True), (f"Bearer {TOKEN}x", False),
    ("Bearer", False), ("Bearer ", False), ("", False), (TOKEN, False),
    (basic("any", TOKEN)["Authorization"], True), (basic("", TOKEN)["Authorization"], True),
    (basic(TOKEN, "")["Authorization"], False),
    ("Basic " + b64encode(TOKEN.encode()).decode(), False),  # no colon: no password
    ("Basic not*base64", False), ("Basic", False),
])
def test_token_ok(header: str, ok: bool) -> None:
    assert guard.token_ok(header, TOKEN) is ok


def test_comparisons_are_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every secret comparison goes through hmac.compare_digest, never ``==``."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(guard.hmac, "compare_digest", spy)
    assert guard.token_ok(f"Bearer {TOKEN}", TOKEN)
    assert guard.token_ok(basic("u", TOKEN)["Authorization"], TOKEN)
    body = b"{}"
    assert guard.grafana_signature_problem(body, signed(body, None), HMAC_SECRET, None) == ""
    assert [c[1] for c in calls[:2]] == [TOKEN.encode(), TOKEN.encode()]
    assert calls[2][1] == signed(body, None)[SIG_HEADER].encode()
    assert len(calls) == 3


# -- size limit and JSON errors -----------------------------------------------------------------

def test_body_over_limit_is_413_before_parsing(tmp_path: Path) -> None:
    client = fw.make_client(tmp_path, BRIDGE_MAX_BODY_BYTES="100")
    at_limit = b'{"alerts": []}'.ljust(100)
    r = client.post("/webhook/alertmanager", data=at_limit)
    assert (r.status_code, r.get_json()) == (200, {"alerts": 0, "queued": 0, "suppressed": 0,
                                                   "held": 0})
    # one byte more, and not JSON: the size is refused first
    r = client.post("/webhook/grafana", data=b"x" * 101)
    assert (r.status_code, r.get_json()) == (413, {"error": "body over 100 bytes"})


def test_real_server_413_and_json_errors(make_bridge: Any) -> None:
    bp = make_bridge(CATCH_ALL, BRIDGE_MAX_BODY_BYTES="1000")
    r = bp.post("/webhook/alertmanager", b" " * 1001)
    assert (r.status_code, r.json()) == (413, {"error": "body over 1000 bytes"})

    # chunked (no Content-Length): cut off at the limit as it is read
    r = bp.session.post(bp.base + "/webhook/alertmanager", data=iter([b" " * 600] * 3),
                        timeout=10)
    assert (r.status_code, r.json()) == (413, {"error": "body over 1000 bytes"})

    # a 10 MB Content-Length with no body: answered at once, the body is never read
    with socket.create_connection(("127.0.0.1", bp.port), timeout=5) as s:
        s.sendall(b"POST /webhook/grafana HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/json\r\nContent-Length: 10000000\r\n\r\n{")
        answer = b""
        while chunk := s.recv(65536):  # the server closes after answering (5 s bound)
            answer += chunk
    head, _, body = answer.decode("latin-1").partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413 "), head
    assert "Content-Type: application/json" in head
    assert body == '{"error":"body over 1000 bytes"}\n'

    for method, path, status, error in [
        ("GET", "/nope", 404, None), ("GET", "/webhook/alertmanager", 405, None),
        ("POST", "/webhook/zabbix", 404, "unknown source 'zabbix': use alertmanager or grafana"),
        ("POST", "/webhook/alertmanager", 400, None),
        ("GET", "/api/notifications?limit=x", 400, "limit must be a whole number"),
        ("GET", "/api/notifications?status=nope", 400,
         "status must be one of queued, sent, retrying, failed, suppressed, held"),
    ]:
        r = bp.session.request(method, bp.base + path, data=b"{", timeout=10)
        assert (r.status_code, r.headers["Content-Type"]) == (status, "application/json"), path
        assert list(r.json()) == ["error"], path
        if error is not None:
            assert r.json()["error"] == error
    assert "Traceback" not in bp.log()


# -- arbitrary bodies ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return fw.make_client(tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=400, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(fw.requests_)
def test_any_body_gets_json_never_5xx(fuzz_client: Any, req: tuple[str, bytes]) -> None:
    source, body = req
    r = fuzz_client.post(f"/webhook/{source}", data=body,
                         headers={"Content-Type": "application/json"})
    assert fw.judge(r.status_code, r.content_type, r.get_data()) == ""


QUEUED_ONE = {"alerts": 1, "queued": 1, "suppressed": 0, "held": 0}


@pytest.mark.parametrize(("body", "status", "answer", "names"), [
    pytest.param(b"[" * 100_000, 400, {"error": "body is not valid JSON: nested too deeply"},
                 [], id="nested-100k"),
    pytest.param(b'{"alerts": [{"labels": {"alertname": "x\\ud800"}}]}', 200, QUEUED_ONE,
                 ["x\ufffd"], id="lone-surrogate"),
    pytest.param(b'{"alerts": [{"labels": {"alertname": "y\xed\xbf\xbf"}}]}', 200,
                 QUEUED_ONE, ["y\ufffd"], id="cesu8-surrogate-bytes"),
    pytest.param(b'{"alerts": [{"labels": {"alertname": "\\ud83d\\ude00"}}]}', 200,
                 QUEUED_ONE, ["\U0001f600"], id="surrogate-pair-kept"),
])
def test_found_by_fuzzing(tmp_path: Path, body: bytes, status: int, answer: dict[str, Any],
                          names: list[str]) -> None:
    """Bodies that answered 500 before: deep nesting (RecursionError) and lone surrogates
    (UnicodeEncodeError in the fingerprint hash and in SQLite). A lone surrogate becomes U+FFFD
    and the alert still pages."""
    client = fw.make_client(tmp_path)
    r = client.post("/webhook/alertmanager", data=body)
    assert (r.status_code, r.get_json()) == (status, answer)
    stored = client.get("/api/notifications").get_json()["notifications"]
    assert [n["alertname"] for n in stored] == names


def test_any_body_real_server(make_bridge: Any) -> None:
    bp = make_bridge(fw.RULES)
    seen = 0

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fw.requests_)
    def prop(req: tuple[str, bytes]) -> None:
        nonlocal seen
        source, body = req
        r = bp.session.post(f"{bp.base}/webhook/{source}", data=body, timeout=10,
                            headers={"Content-Type": "application/json"})
        seen += 1
        assert fw.judge(r.status_code, r.headers.get("Content-Type"), r.content) == ""

    prop()
    assert seen >= 40
    assert bp.get("/healthz").status_code == 200
    log = bp.log()
    assert "Traceback" not in log and "unexpected error" not in log


# -- the Juhe key is never shown ----------------------------------------------------------------

def no_key(*texts: str) -> None:
    from urllib.parse import quote_plus

    for text in texts:
        assert KEY not in text and quote_plus(KEY) not in text


def log_messages(bp: Any, fmt: str) -> list[str]:
    lines = bp.log().splitlines()
    if fmt == "json":
        return [json.loads(line)["msg"] for line in lines]
    return lines


def api(bp: Any, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = bp.get("/api/notifications", params=params).json()[
        "notifications"]
    return items


def state_of(bp: Any, name: str) -> str | None:
    states = [n["state"] for n in api(bp) if n["alertname"] == name]
    return states[0] if states else None


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_key_never_shown_on_juhe_errors(make_bridge: Any, fake_juhe: FakeJuhe, fmt: str) -> None:
    bp = make_bridge(CATCH_ALL, BRIDGE_LOG_FORMAT=fmt, BRIDGE_JUHE_TIMEOUT="0.3s")
    answers: list[str] = []

    def post(name: str) -> None:
        r = bp.post("/webhook/alertmanager", am_body(name))
        assert r.status_code == 200
        answers.append(r.text)

    # wrong key: a configuration error, retried and shown on /readyz
    fake_juhe.valid_key = "some-other-key"
    post("WrongKey")
    assert wait_until(lambda: state_of(bp, "WrongKey") == "retrying", 10)
    ready = bp.get("/readyz")
    answers.append(ready.text)
    assert ready.status_code == 503
    assert ready.json()["problems"] == [
        "juhe configuration error: juhe config error 10001: 错误的请求KEY"]
    wrong_key_reason = {n["alertname"]: n["reason"] for n in api(bp)}["WrongKey"]
    fake_juhe.valid_key = KEY  # fixed: the retried SMS goes out
    assert wait_until(lambda: state_of(bp, "WrongKey") == "sent", 10)

    # a reason that echoes the key (as a misbehaving proxy might): scrubbed
    fake_juhe.fail_next(205401, 1, reason=f"bad mobile for key={KEY}")
    post("EchoedKey")
    assert wait_until(lambda: state_of(bp, "EchoedKey") == "failed", 10)

    # HTTP 500, then a retry that goes through
    fake_juhe.http500_next(1)
    post("Http500")
    assert wait_until(lambda: state_of(bp, "Http500") == "sent", 10)

    # read timeout, then a retry that goes through
    fake_juhe.delay = 1.0
    post("Timeout")
    assert wait_until(lambda: "read timeout after 0.3 s" in bp.log(), 10)
    fake_juhe.delay = 0.0
    assert wait_until(lambda: state_of(bp, "Timeout") == "sent", 10)

    items = api(bp)
    answers += [json.dumps(items, ensure_ascii=False), bp.get("/readyz").text,
                bp.get("/metrics").text]
    reasons = {n["alertname"]: n["reason"] for n in items}
    assert wrong_key_reason == "juhe config error 10001: 错误的请求KEY"
    assert reasons["EchoedKey"] == "juhe permanent error 205401: bad mobile for key=***"
    assert {n["mobile"] for n in items} == {MASKED}
    msgs = log_messages(bp, fmt)
    text = "\n".join(msgs)
    for evidence in ["CONFIGURATION ERROR from Juhe", "failed permanently: juhe permanent "
                     "error 205401: bad mobile for key=***", "(juhe transient error 0: HTTP 500 "
                     "from http://127.0.0.1:", "read timeout after 0.3 s"]:
        assert evidence in text, evidence
    no_key(bp.log(), *answers)
    assert MOBILE not in bp.log()
    assert sum(f"sent to {MASKED} (" in m and "tpl_id=111" in m for m in msgs) == 3


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_key_never_shown_on_connection_refused(make_bridge: Any, fmt: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}/sms/send"
    bp = make_bridge(CATCH_ALL, BRIDGE_LOG_FORMAT=fmt, JUHE_URL=closed)
    r = bp.post("/webhook/alertmanager", am_body("Refused"))
    assert r.status_code == 200
    assert wait_until(lambda: sum("connection error" in m for m in log_messages(bp, fmt)) >= 2,
                      10)
    [item] = api(bp)
    assert item["state"] == "retrying"
    assert item["reason"] == ("juhe transient error 0: connection error: ConnectionError("
                              "NewConnectionError, ConnectionRefusedError) (" + closed + ")")
    no_key(bp.log(), r.text, json.dumps(api(bp)), bp.get("/metrics").text,
           bp.get("/readyz").text)
    assert MOBILE not in bp.log()
    assert f"send to {MASKED} (" in bp.log()
    assert "failed (juhe transient error 0: connection error" in bp.log()


def test_key_not_in_exceptions(fake_juhe: FakeJuhe) -> None:
    """JuheError text, repr and formatted traceback (with causes) never hold the key."""
    closed = f"http://127.0.0.1:{free_port()}/sms/send"
    fake_juhe.delay = 0.5
    fake_juhe.http500_next(1)
    for url, timeout in [(closed, 1.0), (fake_juhe.url, 1.0), (fake_juhe.url, 0.2)]:
        with JuheClient(KEY, url, timeout=timeout) as client, \
                pytest.raises(JuheError) as info:
            client.send(MOBILE, 111, {"name": KEY})
        no_key(str(info.value), repr(info.value), info.value.reason,
               "".join(traceback.format_exception(info.value)))
    fake_juhe.delay = 0.0
    fake_juhe.valid_key = "other"
    with JuheClient(KEY, fake_juhe.url, timeout=1.0) as client, pytest.raises(JuheError) as info:
        client.send(MOBILE, 111, {"name": "x"})
    assert info.value.code == 10001
    no_key(str(info.value), "".join(traceback.format_exception(info.value)), repr(client))


def test_key_not_in_render_or_send_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.cli import main

    monkeypatch.chdir(tmp_path)
    rules = tmp_path / "rules.yaml"
    rules.write_text(CATCH_ALL, encoding="utf-8")
    payload = tmp_path / "p.json"
    payload.write_bytes(am_body("Render"))
    env = {"JUHE_KEY": KEY, "BRIDGE_RULES": str(rules),
           "JUHE_URL": f"http://127.0.0.1:{free_port()}/sms/send"}
    result = CliRunner().invoke(main, ["render", str(payload)], env=env)
    assert result.exit_code == 0, result.output
    assert "tpl_value: #name#=Render&" in result.output
    no_key(result.output)
    result = CliRunner().invoke(main, ["send-test", MOBILE, "--template", "firing"], env=env)
    assert result.exit_code == 1
    assert "Juhe refused (TransientError 0): connection error" in result.output
    no_key(result.output)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_scrub_is_the_last_guard(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Even a log line or traceback that holds the key (raw or url-encoded), e.g. a requests
    exception whose text carries the request, comes out with ``***``."""
    from urllib.parse import quote_plus

    from bridge import logs

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup(fmt, [KEY, TOKEN, None])
        log = logging.getLogger("bridge.test")
        try:
            try:
                raise requests.ConnectionError(
                    f"POST http://juhe/sms/send body mobile={MOBILE}&key={quote_plus(KEY)}")
            except requests.ConnectionError as exc:
                raise JuheError("send failed") from exc
        except JuheError:
            log.exception("send failed, key %s token %s", KEY, TOKEN)
        log.info("plain %s", "line")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    no_key(err)
    assert TOKEN not in err
    assert "send failed, key *** token ***" in err and "key=***" in err
    if fmt == "json":
        records = [json.loads(line) for line in err.splitlines()]
        assert [r["msg"] for r in records] == ["send failed, key *** token ***", "plain line"]
        assert "requests.exceptions.ConnectionError" in records[0]["exc"]


def test_a_short_token_stops_the_service_at_start_saying_why(make_bridge: Any) -> None:
    """Issue 20.10: ``BRIDGE_TOKEN=a`` started without a word, and the log scrubber then masked
    every ``a`` of every line. A token shorter than 16 characters stops ``bridge serve``."""
    bp = make_bridge(CATCH_ALL, start=False, BRIDGE_TOKEN="a")
    bp.start(wait=False)
    assert bp.proc is not None
    assert bp.proc.wait(60) != 0
    assert ("Error: BRIDGE_TOKEN: must be at least 16 characters, not 1: a short token can be"
            " guessed, and the log scrubber masks the token wherever it appears, so a short one"
            " garbles every log line") in bp.log()


def test_login_wrong_tokens_429_after_10_a_minute_across_instances_logged_and_counted(
        make_bridge: Any, tmp_path: Path) -> None:
    """Issue 20.9: 200 wrong tokens in 0.9 s, no log line, no metric. Two instances on one
    store (two workers each): the 11th wrong token within a minute from one address gets 429,
    and so does the right one until the minute ends; each failure is logged (address, never
    the token) and counted."""
    import re

    a = make_bridge(CATCH_ALL, BRIDGE_TOKEN=TOKEN)
    b = make_bridge(CATCH_ALL, BRIDGE_TOKEN=TOKEN)
    if time.time() % 60 > 50:  # all tries within one fixed minute
        time.sleep(60.5 - time.time() % 60)

    def attempt(bp: Any, token: str) -> requests.Response:
        with requests.Session() as s:
            form = s.get(f"{bp.base}/login", timeout=10).text
            m = re.search(r'name="csrf" value="([^"]+)"', form)
            assert m, form
            return s.post(f"{bp.base}/login", data={"csrf": m.group(1), "token": token},
                          allow_redirects=False, timeout=10)

    codes = [attempt(a if i % 2 else b, f"guess-{i:04d}-guess-guess").status_code
             for i in range(11)]
    assert codes == [401] * 10 + [429]
    late = attempt(a, TOKEN)  # the right token, but too late in this minute
    assert late.status_code == 429 and 0 < int(late.headers["Retry-After"]) <= 60
    assert "too many wrong tokens from 127.0.0.1: try again in" in late.text
    for bp, n in ((a, 5), (b, 6)):
        assert wait_until(lambda bp=bp, n=n: bp.log().count(
            "wrong token on POST /login from 127.0.0.1") == n, 5), bp.log()
        assert "guess-" not in bp.log()
        metrics = bp.get("/metrics").text
        assert re.search(rf"^bridge_login_failures_total {n}\.0$", metrics, re.M), metrics
    assert "wrong token on POST /login from 127.0.0.1: 429 for" in b.log()


@pytest.mark.parametrize(("wrong", "at", "wait"), [
    (0, 0.0, 0.0),
    (10, 59.0, 0.0),      # ten wrong tokens are allowed
    (11, 15.0, 45.0),     # the eleventh locks the address until the minute ends
    (11, 59.5, 0.5),
    (11, 60.0, 0.0),      # a new minute: a fresh count
    (30, 75.0, 0.0),
], ids=["none", "ten", "eleven", "eleven-late", "next-minute", "next-minute-after-30"])
def test_login_wait_table(tmp_path: Path, wrong: int, at: float, wait: float) -> None:
    from bridge.store.sqlite.store import SqliteStore

    store = SqliteStore(str(tmp_path / "b.db"))
    minute = 60 * 29_833_333.0
    for i in range(wrong):
        guard.login_failed(store, "10.0.0.1", minute + i * 0.01)
    assert guard.login_wait(store, "10.0.0.1", minute + at) == wait
    assert guard.login_wait(store, "10.0.0.2", minute + at) == 0.0  # per address
    assert store.unknown_code_hit("10.0.0.1", minute) == 1  # apart from unknown ack codes
    store.close()
