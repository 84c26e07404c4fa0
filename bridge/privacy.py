"""What may show of a mobile number or a secret outside the process: one home for the masks.

Mobile numbers appear masked (``138****8000``) in logs and in the API; a password in a store URL
never appears in a log line or an error (docs/design.md, Privacy and logs).
"""

from __future__ import annotations

import re

_MOBILE_IN_TEXT = re.compile(r"(?<!\d)((?:\+|00)?86[- ]?)?(1[3-9]\d{9})(?!\d)")
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)[^@]*@")


def mask_mobile(mobile: str) -> str:
    """``13800138000`` -> ``138****8000``; anything shorter than 8 characters -> ``****``."""
    if len(mobile) < 8:
        return "****"
    return f"{mobile[:3]}****{mobile[-4:]}"


def mask_mobiles_in(text: str) -> str:
    """Every mainland mobile number inside ``text`` masked (``138****8000``, also after a
    ``+86``/``0086``/``86`` prefix), for log lines and reasons that show outside text."""
    return _MOBILE_IN_TEXT.sub(lambda m: (m.group(1) or "") + mask_mobile(m.group(2)), text)


def redact_url(url: str) -> str:
    """A URL (e.g. a store URL) with any password (also ``?sentinel_password=``) replaced by
    ``***``, for logs and errors."""
    url = re.sub(r"([?&]sentinel_password=)[^&]*", r"\1***", url)
    return _PASSWORD_IN_URL.sub(r"\1***@", url)
