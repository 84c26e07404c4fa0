"""Providers, one module each (docs/providers.md): :mod:`.juhe` (Juhe SMS, the default),
:mod:`.aliyun` (Aliyun SMS ``SendSms`` and voice ``SingleCallByTts``), :mod:`.tencent` (Tencent
Cloud SMS ``SendSms`` and VMS ``SendTtsVoice``); :mod:`.transport` holds what the HTTP clients of
the last two share (a pooled session, the mapping of transport failures and HTTP statuses to the
error classes, and the scrubbing of credentials from every text that leaves a client).
"""
