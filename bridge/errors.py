"""Exceptions raised by the bridge.

::

    BridgeError
    ├── PayloadError        a webhook body the bridge cannot read (-> 400)
    ├── RulesError          a rules file that fails the checks (every problem listed)
    ├── StoreUnavailable    the store cannot be read or written (-> 503)
    │   └── StoreUnconfirmed  written, but not confirmed by enough Redis replicas (-> 503)
    └── ProviderError       a send through a provider (Juhe, Aliyun, Tencent Cloud) did not
        │                   succeed (``JuheError`` is its old name)
        ├── TransientError  retry later with backoff
        │   └── ThrottledError  the provider's flow control: retry after a minute
        ├── PermanentError  never retry this SMS
        └── ConfigError     the operator's key, account or template is wrong: retried at
                            least once a minute until fixed, shown on /readyz
"""

from __future__ import annotations

__all__ = [
    "BridgeError",
    "PayloadError",
    "RulesError",
    "StoreUnavailable",
    "StoreUnconfirmed",
    "ProviderError",
    "JuheError",
    "TransientError",
    "ThrottledError",
    "PermanentError",
    "ConfigError",
]


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class PayloadError(BridgeError):
    """Raised when a webhook body is not what a webhook accepts (docs/api.md); the message
    names the place, e.g. ``alerts[0]: missing labels``."""


class RulesError(BridgeError):
    """Raised when a rules file fails its checks.

    ``problems`` lists every problem, each as ``"[file: ]place: message"``.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class StoreUnavailable(BridgeError):
    """Raised when the store cannot be reached or written; the webhook answers 503."""


class StoreUnconfirmed(StoreUnavailable):
    """Raised when a write reached the Redis master but fewer replicas than
    ``BRIDGE_REDIS_WAIT`` confirmed it in time: it stands, but a failover may lose it. Webhooks
    answer 503 (the sender retries; dedup keeps the retry from paging twice)."""


class ProviderError(BridgeError):
    """Raised when a provider did not accept an SMS or a call.

    ``code`` is the provider's own code (Juhe's integer ``error_code``; Aliyun's or Tencent
    Cloud's string ``Code``, e.g. ``isv.AMOUNT_NOT_ENOUGH``), 0 when the failure happened before
    an answer (e.g. a timeout); ``reason`` never contains a credential, in any encoding, and
    shows mobile numbers masked; ``provider`` names the provider (``juhe``, ``aliyun``,
    ``tencent``). ``retry_after`` (seconds) is a minimum wait before the next try, if any.
    """

    def __init__(self, reason: str, code: int | str = 0, retry_after: float | None = None,
                 maybe_sent: bool = False, provider: str = "juhe") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.retry_after = retry_after
        #: True when the SMS may have gone out all the same (a read timeout, Juhe's 10014)
        self.maybe_sent = maybe_sent
        self.provider = provider


#: The old name of :class:`ProviderError`, from when Juhe was the only provider.
JuheError = ProviderError


class TransientError(ProviderError):
    """Raised for failures worth retrying: connection errors, timeouts, HTTP 5xx, a body that is
    not JSON, and Juhe's transient codes. ``retry_after`` (seconds) is a minimum wait, if any."""


class ThrottledError(TransientError):
    """Raised when the provider's flow control refused the send (Aliyun's
    ``isv.BUSINESS_LIMIT_CONTROL``, Tencent Cloud's ``LimitExceeded.*``): retried after
    ``retry_after`` (at least a minute), never a reason to send through another provider
    (docs/providers.md, Errors)."""


class PermanentError(ProviderError):
    """Raised for failures that retrying cannot fix for this SMS (e.g. 205401 wrong mobile)."""


class ConfigError(JuheError):
    """Raised when Juhe says the key, account, quota or template is wrong (e.g. 10001, 205402):
    no fault of the SMS, so delivery retries it (at least every minute, within
    ``BRIDGE_RETRY_FOR``) while the operator fixes it; shown on ``/readyz`` until a send
    succeeds again (docs/juhe.md, Answers and error classes)."""
