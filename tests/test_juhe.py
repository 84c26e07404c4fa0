"""bridge.providers.juhe against FakeJuhe, a real HTTP server on 127.0.0.1 (nothing of ours is
mocked)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import requests
from fakejuhe import FakeJuhe  # tests/ is on sys.path (pytest rootdir-relative import)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import (
    ConfigError,
    JuheError,
    PermanentError,
    ThrottledError,
    TransientError,
)
from bridge.providers.juhe import (
    CODES,
    RETRY_AFTER_205405,
    JuheClient,
    SendResult,
    classify,
    decode_tpl_value,
    encode_tpl_value,
)

# A key whose raw, quote() and quote_plus() forms all differ, to check every form is scrubbed.
KEY = "SECRET+k3y/9f8e7d6c5b4a3210"
KEY_FORMS = (KEY, quote_plus(KEY), quote(KEY, safe=""))
MOBILE = "13800138000"
TPL = 111

# The worked example of docs/juhe.md, Encoding tpl_value.
EXAMPLE_VARS = {"host": "web-01", "msg": "CPU#1 负载=95% & +5"}
EXAMPLE_TPL_VALUE = "#host#=web-01&#msg#=CPU%231%20%E8%B4%9F%E8%BD%BD%3D95%25%20%26%20%2B5"
EXAMPLE_BODY = (
    "mobile=13800138000&tpl_id=123456&tpl_value=%23host%23%3Dweb-01%26%23msg%23%3DCPU%25231"
    "%2520%25E8%25B4%259F%25E8%25BD%25BD%253D95%2525%2520%2526%2520%252B5&key=KEY"
)


@pytest.fixture
def fake() -> Iterator[FakeJuhe]:
    with FakeJuhe(valid_key=KEY, valid_tpl_ids={str(TPL), "123456"}) as f:
        yield f


@pytest.fixture
def client(fake: FakeJuhe) -> Iterator[JuheClient]:
    with JuheClient(KEY, url=fake.url, timeout=2.0) as c:
        yield c


def assert_no_key(exc: JuheError, *keys: str) -> None:
    """The key (in any encoding) is nowhere in what a log could show of ``exc``."""
    shown = [str(exc), repr(exc), exc.reason, "".join(traceback.format_exception(exc))]
    for key in keys or KEY_FORMS:
        for text in shown:
            assert key not in text, text


# -- encoding ---------------------------------------------------------------------------------


def test_encode_reproduces_juhe_md_example() -> None:
    assert encode_tpl_value(EXAMPLE_VARS) == EXAMPLE_TPL_VALUE
    assert decode_tpl_value(EXAMPLE_TPL_VALUE) == EXAMPLE_VARS


def test_post_body_is_juhe_md_example() -> None:
    with FakeJuhe(valid_key="KEY") as fake, JuheClient("KEY", url=fake.url) as client:
        result = client.send("13800138000", 123456, EXAMPLE_VARS)
        (msg,) = fake.wait_for(1, 2.0)
    assert msg["body"] == EXAMPLE_BODY
    assert msg["raw_tpl_value"] == EXAMPLE_TPL_VALUE
    assert msg["vars"] == EXAMPLE_VARS
    assert (msg["mobile"], msg["tpl_id"], msg["key"], msg["method"]) == (
        "13800138000",
        "123456",
        "KEY",
        "POST",
    )
    assert result.sid == msg["sid"]


def test_encode_edge_cases() -> None:
    assert encode_tpl_value({}) == ""
    assert decode_tpl_value("") == {}
    assert encode_tpl_value({"a": ""}) == "#a#="
    assert decode_tpl_value("#a#=") == {"a": ""}
    # '~' is unreserved; everything else that could matter is encoded.
    assert encode_tpl_value({"v": "#&=%+ ~/"}) == "#v#=%23%26%3D%25%2B%20~%2F"


@pytest.mark.parametrize("name", ["", "1a", "a-b", "a#", "#a#", "a=b", "a&b", "a b", "名字", "é"])
def test_encode_rejects_names_that_are_not_identifiers(name: str) -> None:
    with pytest.raises(ValueError):
        encode_tpl_value({name: "x"})


def test_encode_rejects_non_string_values() -> None:
    with pytest.raises(TypeError):
        encode_tpl_value({"n": 5})  # type: ignore[dict-item]


@pytest.mark.parametrize("raw", ["novalue", "#a#=1&b=2", "a=1", "##=1"])
def test_decode_rejects_what_juhe_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        decode_tpl_value(raw)


ADVERSARIAL = {
    "code": "#code#=1&#x#=2",
    "jinja": "{{ 7*7 }}",
    "pct": "%",
    "pct25": "100%25 %zz %",
    "plus": "+1 + +",
    "spaces": "  a  b  ",
    "zh": "服务异常告警",
    "amp": "&",
    "eq": "=",
    "hash": "#",
    "hashes": "##",
    "mixed": "x=A#1&b=2 50% +1 中文",
    "empty": "",
    "ws": "a\nb\r\nc\td",
    "emoji": "🔥 disk 99%",
}


def test_adversarial_values_arrive_exactly(fake: FakeJuhe, client: JuheClient) -> None:
    client.send(MOBILE, TPL, ADVERSARIAL)
    (msg,) = fake.wait_for(1, 2.0)
    assert msg["vars"] == ADVERSARIAL


@pytest.mark.parametrize("value", list(ADVERSARIAL.values()))
def test_one_adversarial_value_forges_no_variable(
    fake: FakeJuhe, client: JuheClient, value: str
) -> None:
    client.send(MOBILE, TPL, {"msg": value})
    (msg,) = fake.wait_for(1, 2.0)
    assert msg["vars"] == {"msg": value}


_HEAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
names = st.builds(
    str.__add__, st.sampled_from(_HEAD), st.text(alphabet=_HEAD + "0123456789", max_size=10)
)
values = st.text(
    alphabet=st.one_of(st.sampled_from("#&=%+ ~中%25"), st.characters(codec="utf-8")),
    max_size=30,
)
variable_dicts = st.dictionaries(names, values, max_size=6)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(variable_dicts)
def test_encode_decode_round_trip(variables: dict[str, str]) -> None:
    raw = encode_tpl_value(variables)
    assert decode_tpl_value(raw) == variables
    # No value can produce a separator or marker of its own.
    assert raw.count("&") == max(len(variables) - 1, 0)
    assert raw.count("#") == 2 * len(variables)


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeJuhe]:
    with FakeJuhe(valid_key=KEY) as f:
        yield f


@pytest.fixture(scope="module")
def shared_client(shared_fake: FakeJuhe) -> Iterator[JuheClient]:
    with JuheClient(KEY, url=shared_fake.url, timeout=2.0) as c:
        yield c


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(variable_dicts)
def test_round_trip_through_fake(
    shared_fake: FakeJuhe, shared_client: JuheClient, variables: dict[str, str]
) -> None:
    before = len(shared_fake.messages)
    result = shared_client.send(MOBILE, TPL, variables)
    msgs = shared_fake.wait_for(before + 1, 2.0)
    assert msgs[-1]["vars"] == variables
    assert msgs[-1]["sid"] == result.sid


# -- success ----------------------------------------------------------------------------------


def test_success_keeps_sid_and_fee(fake: FakeJuhe, client: JuheClient) -> None:
    fake.fee = 2
    result = client.send(MOBILE, TPL, {"a": "b"})
    (msg,) = fake.wait_for(1, 2.0)
    assert result == SendResult(sid=msg["sid"], fee=2)
    assert isinstance(result.sid, str) and result.sid


def test_numeric_sid_becomes_string(fake: FakeJuhe, client: JuheClient) -> None:
    fake.sid_as_number = True
    result = client.send(MOBILE, TPL, {"a": "b"})
    (msg,) = fake.wait_for(1, 2.0)
    assert isinstance(result.sid, str)
    assert result.sid == msg["sid"]
    assert result.fee == 1


def test_error_code_as_string(fake: FakeJuhe, client: JuheClient) -> None:
    fake.error_code_as_string = True
    assert client.send(MOBILE, TPL, {"a": "b"}).fee == 1
    with JuheClient("wrong", url=fake.url) as bad, pytest.raises(ConfigError) as ei:
        bad.send(MOBILE, TPL, {"a": "b"})
    assert ei.value.code == 10001


def test_pooled_keep_alive(fake: FakeJuhe, client: JuheClient) -> None:
    for _ in range(5):
        client.send(MOBILE, TPL, {"a": "b"})
    assert fake.requests == 5
    assert fake.connections == 1


# -- failures ---------------------------------------------------------------------------------

EXPECTED = {"transient": TransientError, "permanent": PermanentError, "config": ConfigError}


@pytest.mark.parametrize("code", [*sorted(CODES), 1, 999999])
def test_each_error_code_raises_its_class(fake: FakeJuhe, client: JuheClient, code: int) -> None:
    fake.fail_next(code, 1)
    with pytest.raises(JuheError) as ei:
        client.send(MOBILE, TPL, {"a": "b"})
    exc = ei.value
    kind = classify(code)
    # 205405 (the carrier's per-number limit) is throttling: transient, never a failover
    assert type(exc) is (ThrottledError if code == 205405 else EXPECTED[kind])
    assert exc.code == code
    assert exc.reason == "injected failure"
    assert_no_key(exc)
    if code == 205405:
        assert exc.retry_after is not None and exc.retry_after >= 60
    assert fake.messages == []


def test_classify_table() -> None:
    assert classify(0) == "ok"
    assert classify(205401) == "permanent"
    assert classify(205402) == "config"
    assert classify(205403) == "transient"
    assert classify(205405) == "transient"
    assert classify(10001) == "config"
    assert classify(10012) == "config"
    assert classify(10014) == "transient"
    assert classify(123) == "permanent"
    assert classify(-1) == "permanent"
    assert RETRY_AFTER_205405 >= 60


def test_wrong_key_is_config_error_10001(fake: FakeJuhe) -> None:
    wrong = "WRONG-" + KEY
    with JuheClient(wrong, url=fake.url) as bad, pytest.raises(ConfigError) as ei:
        bad.send(MOBILE, TPL, {"a": "b"})
    assert ei.value.code == 10001
    assert ei.value.reason == "错误的请求KEY"
    assert_no_key(ei.value, wrong, quote_plus(wrong), *KEY_FORMS)


def test_wrong_template_and_mobile(fake: FakeJuhe, client: JuheClient) -> None:
    with pytest.raises(ConfigError) as ei:
        client.send(MOBILE, 999, {"a": "b"})
    assert ei.value.code == 205402
    with pytest.raises(PermanentError) as ej:
        client.send("12345", TPL, {"a": "b"})
    assert type(ej.value) is PermanentError and ej.value.code == 205401


def test_reason_echoing_the_key_is_scrubbed(fake: FakeJuhe, client: JuheClient) -> None:
    fake.fail_next(10009, 1, reason=f"key {KEY} forbidden (sent {quote_plus(KEY)})")
    with pytest.raises(ConfigError) as ei:
        client.send(MOBILE, TPL, {"a": "b"})
    assert ei.value.reason == "key *** forbidden (sent ***)"
    assert_no_key(ei.value)


def test_http_500_is_transient(fake: FakeJuhe, client: JuheClient) -> None:
    fake.http500_next(1)
    with pytest.raises(TransientError) as ei:
        client.send(MOBILE, TPL, {"a": "b"})
    assert ei.value.code == 0 and "500" in ei.value.reason
    assert_no_key(ei.value)
    assert client.send(MOBILE, TPL, {"a": "b"}).sid  # the next one goes through


def test_http_429_and_503_transient_with_retry_after(fake: FakeJuhe, client: JuheClient) -> None:
    fake.respond_next(429, "slow down", content_type="text/plain", headers={"Retry-After": "7"})
    fake.respond_next(503, "", headers={"Retry-After": "bogus"})
    with pytest.raises(TransientError) as ei:
        client.send(MOBILE, TPL, {"a": "b"})
    assert ei.value.retry_after == 7.0
    with pytest.raises(TransientError) as ej:
        client.send(MOBILE, TPL, {"a": "b"})
    assert ej.value.retry_after is None
    assert_no_key(ej.value)


def test_http_4xx(fake: FakeJuhe) -> None:
    fake.respond_next(400, f"<html>bad request {KEY}</html>", content_type="text/html")
    with JuheClient(KEY, url=fake.url) as client, pytest.raises(PermanentError) as ei:
        client.send(MOBILE, TPL, {"a": "b"})
    assert type(ei.value) is PermanentError and "400" in ei.value.reason
    assert_no_key(ei.value)
    # A wrong JUHE_URL (404) is the operator's to fix.
    with JuheClient(KEY, url=fake.base_url + "/sms/nope") as client:
        with pytest.raises(ConfigError) as ej:
            client.send(MOBILE, TPL, {"a": "b"})
    assert "404" in ej.value.reason
    assert_no_key(ej.value)


def test_redirect_is_not_followed(fake: FakeJuhe, client: JuheClient) -> None:
    fake.respond_next(302, "", headers={"Location": fake.url})
    with pytest.raises(ConfigError) as ei:
        client.send(MOBILE, TPL, {"a": "b"})
    assert "302" in ei.value.reason
    assert fake.requests == 1 and fake.messages == []


@pytest.mark.parametrize(
    "body",
    [
        f"<html>502 Bad Gateway {KEY}</html>",
        "",
        "[]",
        "null",
        '{"reason": "?", "result": null}',
        '{"reason": "?", "error_code": "abc"}',
        '{"reason": "?", "error_code": true}',
        b"\xff\xfe\x00garbage",
    ],
)
def test_answer_without_json_error_code_is_transient(
    fake: FakeJuhe, client: JuheClient, body: str | bytes
) -> None:
    fake.respond_next(200, body, content_type="text/html")
    with pytest.raises(TransientError) as ei:
        client.send(MOBILE, TPL, {"a": "b"})
    assert ei.value.code == 0
    assert_no_key(ei.value)


def test_timeout_is_transient(fake: FakeJuhe) -> None:
    fake.delay = 0.3
    with JuheClient(KEY, url=fake.url, timeout=0.1) as client:
        t0 = time.monotonic()
        with pytest.raises(TransientError) as ei:
            client.send(MOBILE, TPL, {"a": "b"})
        assert time.monotonic() - t0 < 0.28
    assert ei.value.code == 0 and "timeout" in ei.value.reason
    assert ei.value.maybe_sent  # delivery then waits out min_gap before trying again
    assert_no_key(ei.value)
    # At least once: the fake still accepted it after the client gave up.
    assert len(fake.wait_for(1, 2.0)) == 1


def test_connection_refused_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with JuheClient(KEY, url=f"http://127.0.0.1:{port}/sms/send", timeout=1.0) as client:
        with pytest.raises(TransientError) as ei:
            client.send(MOBILE, TPL, {"a": "b"})
    assert ei.value.code == 0 and "connection error" in ei.value.reason
    assert_no_key(ei.value)


def test_down_then_up(fake: FakeJuhe, client: JuheClient) -> None:
    client.send(MOBILE, TPL, {"a": "1"})  # a pooled connection exists now
    fake.down()
    for _ in range(2):
        with pytest.raises(TransientError) as ei:
            client.send(MOBILE, TPL, {"a": "2"})
        assert ei.value.code == 0 and "connection error" in ei.value.reason
        assert_no_key(ei.value)
    fake.up()
    client.send(MOBILE, TPL, {"a": "3"})
    assert [m["vars"]["a"] for m in fake.messages] == ["1", "3"]


def test_request_exception_text_would_leak_but_ours_does_not() -> None:
    """A key in the URL (a misconfiguration) shows up in requests' own messages; ours hide it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/sms/send?key={quote_plus(KEY)}"
    with pytest.raises(requests.ConnectionError) as raw:
        requests.post(url, timeout=1.0)
    assert quote_plus(KEY) in str(raw.value)
    with JuheClient(KEY, url=url, timeout=1.0) as client, pytest.raises(TransientError) as ei:
        client.send(MOBILE, TPL, {"a": "b"})
    assert_no_key(ei.value)


# -- dry run, construction --------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, ""])
def test_dry_run_sends_nothing(fake: FakeJuhe, key: str | None) -> None:
    with JuheClient(key, url=fake.url) as client:
        assert client.dry_run
        assert client.send(MOBILE, TPL, ADVERSARIAL) == SendResult(sid="dry-run", fee=0)
        with pytest.raises(ValueError):
            client.send(MOBILE, TPL, {"not-a-name": "x"})
    assert fake.requests == 0 and fake.connections == 0


def test_construction() -> None:
    client = JuheClient(KEY, url="https://example.invalid/sms/send")
    assert not client.dry_run
    assert KEY not in repr(client)
    client.close()
    with pytest.raises(ValueError):
        JuheClient(KEY, url="v.juhe.cn/sms/send")
    with pytest.raises(ValueError):
        JuheClient(KEY, timeout=0)


def test_given_session_is_used_and_left_open(fake: FakeJuhe) -> None:
    with requests.Session() as session:
        with JuheClient(KEY, url=fake.url, session=session) as client:
            client.send(MOBILE, TPL, {"a": "b"})
        # Still usable: the client does not close a session it did not make.
        assert session.get(fake.base_url + "/_stats", timeout=2).json()["messages"] == 1


# -- the fake itself --------------------------------------------------------------------------


def test_fake_wait_for_is_bounded(fake: FakeJuhe) -> None:
    t0 = time.monotonic()
    assert fake.wait_for(1, 0.1) == []
    assert time.monotonic() - t0 < 1.0


def test_fake_runs_as_a_script(tmp_path: Path) -> None:
    log = tmp_path / "juhe.jsonl"
    script = Path(__file__).with_name("fakejuhe.py")
    cmd = [sys.executable, str(script), "--port", "0", "--log", str(log), "--key", KEY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fake juhe on http://127.0.0.1:"), line
        url = line.split()[-1]
        base = url.rsplit("/sms/send", 1)[0]
        with JuheClient(KEY, url=url) as client:
            client.send(MOBILE, TPL, {"msg": "a&b=c 中"})
            requests.post(base + "/_control", json={"fail_next": [10014, 1]}, timeout=2)
            with pytest.raises(TransientError):
                client.send(MOBILE, TPL, {"msg": "x"})
        stats = requests.get(base + "/_stats", timeout=2).json()
        assert stats["requests"] == 2 and stats["messages"] == 1
        (rec,) = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
        assert rec["vars"] == {"msg": "a&b=c 中"}
    finally:
        proc.terminate()
        proc.wait(timeout=5)
    assert proc.returncode == 0


@pytest.mark.parametrize(("script", "maybe_sent"), [
    (lambda f: f.fail_next(10014, 1), True),
    (lambda f: f.fail_next(205403, 1), False),
    (lambda f: f.http500_next(1), False),
])
def test_maybe_sent_only_where_the_sms_may_have_gone_out(fake: FakeJuhe, client: JuheClient,
                                                         script: object, maybe_sent: bool) -> None:
    script(fake)  # type: ignore[operator]
    with pytest.raises(TransientError) as ei:
        client.send(MOBILE, TPL, {"a": "b"})
    assert ei.value.maybe_sent is maybe_sent
