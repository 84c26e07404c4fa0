"""What the provider clients share: one pooled HTTP session per client, the mapping of a failed
request to :mod:`bridge.errors`' classes, and the scrubbing of credentials.

Credentials never leave a client (docs/providers.md, Credentials): every reason a client raises
is built here from class names, HTTP statuses and the provider's own message (never from
``str()`` of a ``requests`` exception, which may carry the request), errors are raised outside
``except`` blocks or ``from None`` (no chained cause that would print the request), and every
text passes :meth:`Scrubber.scrub`, which replaces each credential in its plain, URL-encoded and
base64 forms, then masks mobile numbers (:func:`bridge.privacy.mask_mobiles_in`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from http.client import HTTPException
from time import time
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import quote, quote_plus, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from bridge.errors import (
    ConfigError,
    PermanentError,
    ProviderError,
    ThrottledError,
    TransientError,
)
from bridge.privacy import mask_mobiles_in

__all__ = [
    "POOL_MAXSIZE",
    "THROTTLE_WAIT",
    "Kind",
    "PooledClient",
    "Scrubber",
    "by_table",
    "checked",
    "cause_names",
    "cut",
    "check_url",
    "fit_total",
    "json_object",
    "new_session",
    "post",
    "provider_error",
    "retry_after",
    "status_error",
]

#: Connections kept per host in a client's pool (one send uses one connection at a time).
POOL_MAXSIZE: Final = 10

#: Seconds a throttled send waits at least before it is tried again (docs/providers.md, Errors).
THROTTLE_WAIT: Final = 60.0

#: The longest provider message kept in a reason (Aliyun's signature error echoes the request).
MESSAGE_MAX: Final = 300
#: A call's variables together stay under this many characters (Aliyun's bound for TTS; the
#: Tencent client keeps to it too).
MAX_VOICE_TOTAL: Final = 250
#: How often a call reads its template out (both providers' ``PlayTimes``).
PLAY_TIMES: Final = 2

_CONFIG_HTTP: Final = frozenset({401, 403, 404, 405, 410})
_TRANSIENT_HTTP: Final = frozenset({408, 429})

#: The class of a provider's answer code (docs/providers.md, Errors).
Kind = Literal["ok", "transient", "throttled", "permanent", "config"]


def by_table(code: str, codes: Mapping[str, Kind],
             prefixes: Iterable[tuple[str, Kind]]) -> Kind:
    """Class of a provider's ``code``: ``codes[code]``, else the class of the first of
    ``prefixes`` it starts with, else ``"permanent"``."""
    kind = codes.get(code)
    if kind is not None:
        return kind
    for prefix, by_prefix in prefixes:
        if code.startswith(prefix):
            return by_prefix
    return "permanent"


def provider_error(kind: Kind, reason: str, code: str, provider: str,
                   wait: float | None = None) -> ProviderError:
    """The error of a failed answer of class ``kind`` (not ``"ok"``): throttled waits
    :data:`THROTTLE_WAIT`, transient ``wait`` (from ``Retry-After``, if any), configuration
    and permanent errors wait nothing."""
    if kind == "throttled":
        return ThrottledError(reason, code, THROTTLE_WAIT, False, provider)
    if kind == "transient":
        return TransientError(reason, code, wait, False, provider)
    if kind == "config":
        return ConfigError(reason, code, None, False, provider)
    return PermanentError(reason, code, None, False, provider)


def checked(variables: Mapping[str, str]) -> list[str]:
    """The values of ``variables`` in their order; ``TypeError`` naming the first variable
    whose value is not a string."""
    out: list[str] = []
    for name, value in variables.items():
        if not isinstance(value, str):
            raise TypeError(f"template variable {name} must be a string, "
                            f"not {type(value).__name__}")
        out.append(value)
    return out


class PooledClient:
    """What the Aliyun and Tencent Cloud clients share: a pooled session (their own unless one
    is given, which the caller closes), a :class:`Scrubber` of their credentials, and the
    provider's name put on every error they raise."""

    provider = ""

    def __init__(self, secrets: Iterable[str], session: requests.Session | None) -> None:
        self._scrubber = Scrubber(secrets)
        self._own_session = session is None
        self._session = session or new_session()

    def _scrubbed(self, exc: ProviderError) -> ProviderError:
        """``exc`` again, its reason scrubbed and marked as this provider's."""
        return type(exc)(self._scrubber.scrub(exc.reason), exc.code, exc.retry_after,
                         exc.maybe_sent, self.provider)

    def close(self) -> None:
        """Close the pooled connections (only of a session the client made itself)."""
        if self._own_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Scrubber:
    """Replaces credentials in text: each of ``secrets`` (empty ones ignored) in its plain form,
    URL-encoded (``quote`` and ``quote_plus``) and base64 (standard and URL-safe, with and
    without padding) forms, longest first, by ``***``; then masks mobile numbers."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            raw = secret.encode("utf-8")
            b64 = [base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]
            forms.update({secret, quote(secret, safe=""), quote_plus(secret),
                          quote(secret, safe="~")})
            forms.update(b64)
            forms.update(b.rstrip("=") for b in b64)
        self._forms = sorted((f for f in forms if f), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """``text`` with every form of every credential replaced by ``***`` and mobile numbers
        masked (``138****8000``)."""
        for form in self._forms:
            text = text.replace(form, "***")
        return mask_mobiles_in(text)


def check_url(url: str, what: str) -> str:
    """``url`` checked to be ``http(s)://host[:port]/path``; returns it without userinfo or
    query for messages (``scheme://host[:port]/path``). Raises ``ValueError`` naming ``what``
    (the environment variable) otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be http(s)://host/path")
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path or '/'}"


def new_session() -> requests.Session:
    """A ``requests.Session`` with a pool of :data:`POOL_MAXSIZE` connections per host and no
    automatic retries (the deliverer retries, with backoff)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=POOL_MAXSIZE, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def cause_names(exc: BaseException) -> str:
    """``"ConnectionError(NewConnectionError, ConnectionRefusedError)"``: the class names along
    an exception's causes, never its text (which may hold the request)."""
    names: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(names) < 6:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        name = type(e).__name__
        if name not in names and name != "MaxRetryError":
            names.append(name)
        nxt: list[object] = [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]
        todo.extend(x for x in nxt if isinstance(x, BaseException))
    head, rest = names[0], names[1:]
    return f"{head}({', '.join(rest)})" if rest else head


def post(session: requests.Session, url: str, *, data: bytes, headers: Mapping[str, str],
         timeout: float, where: str, provider: str) -> requests.Response:
    """POST ``data`` with ``headers`` to ``url`` (no redirects followed); returns the response
    whatever its status.

    Raises :class:`TransientError` (``code`` 0, ``provider``) for a connection error or a
    timeout; a read timeout sets ``maybe_sent`` (the provider may have acted on it). The error
    names ``where`` and the exception classes only, and has no chained cause.
    """
    failure: str | None = None
    maybe_sent = False
    resp: requests.Response | None = None
    try:
        resp = session.post(url, data=data, headers=dict(headers), timeout=timeout,
                            allow_redirects=False)
    except requests.ConnectTimeout as exc:
        failure = f"connect timeout after {timeout:g} s: {cause_names(exc)}"
    except requests.Timeout as exc:
        maybe_sent = True
        failure = (f"read timeout after {timeout:g} s (it may have been sent): "
                   f"{cause_names(exc)}")
    except requests.ConnectionError as exc:
        failure = f"connection error: {cause_names(exc)}"
    except (requests.RequestException, OSError, HTTPException, Urllib3HTTPError) as exc:
        failure = f"request failed: {cause_names(exc)}"
    # raised outside the except blocks: no chained requests exception (which carries the
    # request, its headers and its body) in the traceback
    if failure is not None or resp is None:
        raise TransientError(f"{failure} ({where})", 0, None, maybe_sent, provider)
    return resp


def retry_after(header: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time())


def status_error(resp: requests.Response, where: str, provider: str,
                 env: str) -> ProviderError | None:
    """The error an HTTP status means when the answer carries no code of the provider's own:
    5xx, 408, 429 transient (``retry_after`` from ``Retry-After``); 3xx (not followed),
    401, 403, 404, 405, 410 configuration (naming ``env``, the URL's variable); other 4xx
    permanent; ``None`` for 2xx."""
    status = resp.status_code
    if status >= 500 or status in _TRANSIENT_HTTP:
        wait = retry_after(resp.headers.get("Retry-After"))
        return TransientError(f"HTTP {status} from {where}", 0, wait, False, provider)
    if 300 <= status < 400:
        return ConfigError(f"HTTP {status} redirect from {where} (not followed); set {env} to "
                           "the final address", 0, None, False, provider)
    if status in _CONFIG_HTTP:
        return ConfigError(f"HTTP {status} from {where}: check {env}", 0, None, False, provider)
    if status >= 400:
        return PermanentError(f"HTTP {status} from {where}", 0, None, False, provider)
    return None


def json_object(resp: requests.Response) -> dict[str, Any] | None:
    """The answer's body as a JSON object, or ``None`` when it is not one."""
    try:
        body = json.loads(resp.content)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    return body if isinstance(body, dict) else None


def fit_total(variables: Mapping[str, str], limit: int) -> dict[str, str]:
    """``variables`` with their values together shorter than ``limit`` characters: values
    longer than a common cap are cut to it and marked ``…`` (the longest are cut first, the
    shortest kept whole). Returns a new dict in the same order; unchanged when already short
    enough. Used for calls (docs/providers.md, Templates: a voice template's values stay under
    250 characters in all)."""
    values = list(variables.values())
    if sum(len(v) for v in values) < limit:
        return dict(variables)
    budget = limit - 1
    cap = max((len(v) for v in values), default=0)
    while cap > 1 and sum(min(len(v), cap) for v in values) > budget:
        cap -= 1
    return {k: (v if len(v) <= cap else v[: cap - 1] + "…") for k, v in variables.items()}


def cut(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` characters, marked ``…`` when cut."""
    return value if len(value) <= limit else value[: limit - 1] + "…"
