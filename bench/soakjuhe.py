#!/usr/bin/env python3
"""A flaky fake Juhe for the soak (``bench/soak.py``): ``tests/fakejuhe.py`` that fails a share
of the send requests at random.

Of the failed ones, ``--permanent-share`` answer ``error_code`` 205404 (a permanent failure:
the bridge marks the SMS ``failed`` with Juhe's reason); the rest are transient, half HTTP 500
and half ``error_code`` 205403, which the bridge retries. A failed request is never recorded as
an accepted message, so every line of ``--log`` is one SMS that went out.

    python bench/soakjuhe.py --port 0 --log FILE [--fail-rate 0.05] [--permanent-share 0.2]

Everything else (``/_stats``, ``/_messages``, ``/_control``, ``--key``) is as in
``tests/fakejuhe.py``; ``/_stats`` also counts the injected failures under ``"injected"``.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakejuhe import FakeJuhe, serve_until_stopped  # noqa: E402


class FlakyJuhe(FakeJuhe):
    """:class:`FakeJuhe` failing ``fail_rate`` of the send requests (see the module doc)."""

    def __init__(self, *args: Any, fail_rate: float = 0.05, permanent_share: float = 0.2,
                 seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail_rate = fail_rate
        self.permanent_share = permanent_share
        self._rng = random.Random(seed)
        self._injected = {"permanent_205404": 0, "http_500": 0, "transient_205403": 0}

    def _begin(self) -> tuple[bool, Any, float]:
        with self.lock:
            r = self._rng.random()
        if r < self.fail_rate:
            share = r / self.fail_rate
            if share < self.permanent_share:
                kind = "permanent_205404"
                self.fail_next(205404, 1, "短信发送失败 (injected)")
            elif share < self.permanent_share + (1 - self.permanent_share) / 2:
                kind = "http_500"
                self.http500_next(1)
            else:
                kind = "transient_205403"
                self.fail_next(205403, 1, "网络错误,请重试 (injected)")
            with self.lock:
                self._injected[kind] += 1
        return super()._begin()

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        with self.lock:
            out["injected"] = dict(self._injected)
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description="flaky fake Juhe SMS API")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", default=None)
    ap.add_argument("--key", default="testkey")
    ap.add_argument("--fail-rate", type=float, default=0.05)
    ap.add_argument("--permanent-share", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    fake = FlakyJuhe(args.key, None, host=args.host, port=args.port, log_path=args.log,
                     fail_rate=args.fail_rate, permanent_share=args.permanent_share,
                     seed=args.seed)
    return serve_until_stopped(fake)


if __name__ == "__main__":
    sys.exit(main())
