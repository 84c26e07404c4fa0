"""The seam between delivery and an SMS provider: :class:`Sender` (one SMS per call),
:class:`SendResult` (what an accepted send returns) and :class:`DryRunSender` (sends nothing).
A provider module (:mod:`bridge.providers.juhe`) implements :class:`Sender`; delivery
(:mod:`bridge.deliver.deliverer`) only knows this module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from bridge.privacy import mask_mobile, mask_mobiles_in

#: a stable log name (the dry-run lines were logged as ``bridge.delivery``), not the module path
log = logging.getLogger("bridge.delivery")


@dataclass(frozen=True)
class SendResult:
    """The provider accepted the SMS (not: the phone received it).

    ``sid``: Juhe's message id, always a string (``""`` if Juhe sent none; ``"dry-run"`` when
    nothing was sent); ``fee``: billed units (0 if Juhe sent none, and in dry-run);
    ``outcome``: the ``bridge_juhe_requests_total`` outcome, ``ok`` or ``dry_run``.
    """

    sid: str
    fee: int
    outcome: str = "ok"


class Sender(Protocol):
    """What delivery sends through (sachet's ``Provider``): one SMS per call.

    Returns :class:`SendResult`; raises :class:`bridge.errors.JuheError`
    (``TransientError``, ``PermanentError``, ``ConfigError``) for a refused or failed send, and
    ``ValueError``/``TypeError`` for variables that cannot be encoded.
    """

    def send(self, mobile: str, tpl_id: int, variables: Mapping[str, str]) -> SendResult:
        """Send one SMS of template ``tpl_id`` with ``variables`` to ``mobile``."""
        ...


class DryRunSender:
    """The sender without a provider key: sends nothing, logs each SMS that would be sent
    (mobile masked) and answers ``SendResult(sid="dry-run", fee=0, outcome="dry_run")``.
    ``encode`` is the provider's encoding of the variables (for Juhe
    :func:`bridge.providers.juhe.encode_tpl_value`): what it refuses, a dry run refuses too."""

    def __init__(self, encode: Callable[[Mapping[str, str]], object]) -> None:
        self.encode = encode

    def send(self, mobile: str, tpl_id: int, variables: Mapping[str, str]) -> SendResult:
        """See :class:`Sender`; raises only for variables that cannot be encoded."""
        self.encode(variables)
        log.warning("DRY-RUN (no JUHE_KEY): would send to %s tpl_id=%s vars=%s",
                    mask_mobile(mobile), tpl_id,
                    mask_mobiles_in(json.dumps(dict(variables), ensure_ascii=False)))
        return SendResult(sid="dry-run", fee=0, outcome="dry_run")
