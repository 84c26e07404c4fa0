"""Logging set-up: text or one JSON object per line (``BRIDGE_LOG_FORMAT``), and a filter that
scrubs secrets (the Juhe key, the token, the HMAC secret) from every record as a last guard."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from urllib.parse import quote, quote_plus


class Scrub(logging.Filter):
    """Replaces every secret (raw and url-encoded) in a record's final message with ``***``."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        forms: set[str] = set()
        for s in secrets:
            if s:
                forms.update({s, quote(s, safe=""), quote_plus(s)})
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


#: Every character some tool takes for a line break, shown escaped in text logs.
_LINE_BREAKS = {ord(c): rf"\u{ord(c):04x}" for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
_LINE_BREAKS.update({ord("\n"): "\\n", ord("\r"): "\\r"})


class TextFormatter(logging.Formatter):
    """One line per record: CR and LF inside the message (alert text) are shown as ``\\n``
    so that an alert can never forge a log line; tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        text = super().formatMessage(record)
        return text.translate(_LINE_BREAKS)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, pid, msg (and exc when any)."""

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
        return json.dumps(out, ensure_ascii=False)


def setup(fmt: str = "text", secrets: Iterable[str | None] = (), level: int = logging.INFO) -> None:
    """Configure the root logger once for this process (replacing earlier handlers)."""
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
