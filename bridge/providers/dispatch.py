"""The providers besides Juhe that the environment configures, and sending one SMS or call
through one of them (docs/providers.md).

:class:`Providers` holds an :class:`~bridge.providers.aliyun.AliyunClient` when both
``ALIYUN_ACCESS_KEY_ID`` and ``ALIYUN_ACCESS_KEY_SECRET`` are set and a
:class:`~bridge.providers.tencent.TencentClient` when both ``TENCENTCLOUD_SECRET_*`` are; in
dry-run (no ``JUHE_KEY``) nothing is sent and each SMS or call that would be made is logged.
A template's ``fallback`` or ``voice`` names the provider; the deliverer decides when
(:mod:`bridge.deliver.deliverer`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.privacy import mask_mobile, mask_mobiles_in
from bridge.providers.aliyun import AliyunClient
from bridge.providers.base import SendResult
from bridge.providers.tencent import TencentClient
from bridge.rules.model import Fallback, Voice

__all__ = ["PROVIDERS", "Providers", "STATUS_CONFIG"]

log = logging.getLogger(__name__)

#: Every provider by name; Juhe is the default.
PROVIDERS = ("juhe", "aliyun", "tencent")
#: The store status key of a provider's configuration note (Juhe's is ``juhe_config``).
STATUS_CONFIG = {"aliyun": "aliyun_config", "tencent": "tencent_config"}
_ENV = {"aliyun": "ALIYUN_ACCESS_KEY_ID and ALIYUN_ACCESS_KEY_SECRET",
        "tencent": "TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY"}


def _config_id(*parts: str | None) -> str:
    """A short hash naming a provider's configuration in force (never its credentials)."""
    return hashlib.sha256("\0".join(p or "" for p in parts).encode()).hexdigest()[:16]


@dataclass
class Providers:
    """The Aliyun and Tencent Cloud clients in force (``None``: no credentials), whether this is
    dry-run, and each provider's configuration id (for its ``/readyz`` note)."""

    aliyun: AliyunClient | None = None
    tencent: TencentClient | None = None
    dry_run: bool = False
    config_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Providers:
        """The clients ``settings`` configure (timeout: ``juhe_timeout``)."""
        s = settings
        aliyun = tencent = None
        if s.aliyun_access_key_id and s.aliyun_access_key_secret:
            aliyun = AliyunClient(s.aliyun_access_key_id, s.aliyun_access_key_secret,
                                  sms_url=s.aliyun_sms_url, voice_url=s.aliyun_voice_url,
                                  timeout=s.juhe_timeout)
        if s.tencent_secret_id and s.tencent_secret_key:
            tencent = TencentClient(s.tencent_secret_id, s.tencent_secret_key,
                                    region=s.tencent_region, sms_url=s.tencent_sms_url,
                                    vms_url=s.tencent_vms_url, timeout=s.juhe_timeout)
        ids = {
            "aliyun": _config_id(s.aliyun_sms_url, s.aliyun_voice_url, s.aliyun_access_key_id,
                                 s.aliyun_access_key_secret),
            "tencent": _config_id(s.tencent_region, s.tencent_sms_url, s.tencent_vms_url,
                                  s.tencent_secret_id, s.tencent_secret_key),
        }
        return cls(aliyun, tencent, s.dry_run, ids)

    def configured(self, provider: str) -> bool:
        """True when ``provider`` can send (Juhe always can; dry-run sends nothing anyway)."""
        if provider == "juhe" or self.dry_run:
            return True
        return getattr(self, provider, None) is not None

    def _client(self, provider: str) -> AliyunClient | TencentClient:
        client = self.aliyun if provider == "aliyun" else self.tencent
        if client is None:
            raise ConfigError(f"{provider}: no credentials in the environment (set "
                              f"{_ENV[provider]})", "credentials", None, False, provider)
        return client

    @staticmethod
    def _dry(what: str, provider: str, mobile: str, variables: Mapping[str, str]) -> SendResult:
        log.warning("DRY-RUN (no JUHE_KEY): would %s %s through %s vars=%s", what,
                    mask_mobile(mobile), provider,
                    mask_mobiles_in(json.dumps(dict(variables), ensure_ascii=False)))
        return SendResult(sid="dry-run", fee=0, outcome="dry_run")

    def send_sms(self, fallback: Fallback, mobile: str,
                 variables: Mapping[str, str]) -> SendResult:
        """Send one SMS to ``mobile`` through the provider ``fallback`` names.

        Raises :class:`bridge.errors.ProviderError` subclasses (``provider`` set) and
        ``TypeError`` for a value that is not a string."""
        if self.dry_run:
            return self._dry("send an SMS to", fallback.provider, mobile, variables)
        if fallback.aliyun is not None:
            client = self._client("aliyun")
            assert isinstance(client, AliyunClient)
            return client.send_sms(mobile, fallback.aliyun.sign_name,
                                   fallback.aliyun.template_code, variables)
        assert fallback.tencent is not None
        tclient = self._client("tencent")
        assert isinstance(tclient, TencentClient)
        return tclient.send_sms(mobile, fallback.tencent.sign_name, fallback.tencent.template_id,
                                fallback.tencent.sdk_app_id, variables)

    def call(self, voice: Voice, mobile: str, variables: Mapping[str, str]) -> SendResult:
        """Call ``mobile`` through the provider ``voice`` names; raises as :meth:`send_sms`."""
        if self.dry_run:
            return self._dry("call", voice.provider, mobile, variables)
        if voice.aliyun is not None:
            client = self._client("aliyun")
            assert isinstance(client, AliyunClient)
            return client.call(mobile, voice.aliyun.tts_code, variables,
                               voice.aliyun.called_show_number)
        assert voice.tencent is not None
        tclient = self._client("tencent")
        assert isinstance(tclient, TencentClient)
        return tclient.call(mobile, voice.tencent.template_id, voice.tencent.voice_sdk_app_id,
                            variables)

    def close(self) -> None:
        """Close the clients' pooled connections."""
        for client in (self.aliyun, self.tencent):
            if client is not None:
                client.close()
