"""Logging set-up: text or one JSON object per line (``BRIDGE_LOG_FORMAT``), and a filter that
scrubs secrets (the Juhe key, the token, the HMAC secret) from every record as a last guard."""

from __future__ import annotations

import base64
import json
import logging
import sys
import time
from collections.abc import Iterable
from urllib.parse import quote, quote_plus


class Scrub(logging.Filter):
    """Replaces every secret (raw, url-encoded and base64) in a record's final message with
    ``***``."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        forms: set[str] = set()
        for s in secrets:
            if s:
                raw = s.encode("utf-8")
                b64 = [base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]
                forms.update({s, quote(s, safe=""), quote_plus(s), *b64,
                              *(b.rstrip("=") for b in b64)})
        self.secrets = sorted(forms, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        msg = record.getMessage()
        text = msg
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        exc_text = record.exc_text or ""
        for s in self.secrets:
            text = text.replace(s, "***")
            exc_text = exc_text.replace(s, "***")
        if text != msg:
            record.msg, record.args = text, None
        if exc_text != (record.exc_text or ""):
            record.exc_text = exc_text
        return True


#: Characters shown escaped (``\u202e``) in every log line, text and JSON: C0 controls but tab
#: (NUL makes ``grep`` call the log binary, ESC drives the terminal), DEL and C1, every line or
#: paragraph separator, and the invisible characters that reorder or hide text on a terminal
#: (bidi embeddings, overrides, isolates and marks, zero-width characters, the BOM).
HOSTILE = "".join(
    [chr(c) for c in range(0x20) if c != 0x09] + [chr(c) for c in range(0x7f, 0xa0)]
    + list("\u00ad\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u202a\u202b\u202c"
           "\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"))
_ESCAPES = {ord(c): rf"\u{ord(c):04x}" for c in HOSTILE}
_LINE_BREAKS = {**_ESCAPES, ord("\n"): "\\n", ord("\r"): "\\r"}
_JSON_EXTRA = {ord(c): rf"\u{ord(c):04x}" for c in HOSTILE if ord(c) >= 0x7f}


class TextFormatter(logging.Formatter):
    """One line per record: CR and LF inside the message (alert text) are shown as ``\\n``
    so that an alert can never forge a log line, and every other :data:`HOSTILE` character
    as ``\\uXXXX``; tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        text = super().formatMessage(record)
        return text.translate(_LINE_BREAKS)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, pid, msg (and exc when any); C0 controls
    are escaped by JSON itself, the rest of :data:`HOSTILE` as ``\\uXXXX`` too."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_info or record.exc_text:
            out["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(out, ensure_ascii=False).translate(_JSON_EXTRA)


def setup(fmt: str = "text", secrets: Iterable[str | None] = (),
          level: int | str = logging.INFO) -> None:
    """Configure the root logger once for this process (replacing earlier handlers);
    ``level`` is a :mod:`logging` level or its name (``"DEBUG"``, ``BRIDGE_LOG_LEVEL``)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(
            "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    handler.addFilter(Scrub(secrets))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("gunicorn.error", "gunicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    logging.getLogger("urllib3").setLevel(logging.WARNING)
