"""Providers: one module per service that sends an SMS or places a call (docs/providers.md).

``aliyun`` (Aliyun SMS ``SendSms`` and voice ``SingleCallByTts``), ``tencent`` (Tencent Cloud SMS
``SendSms`` and VMS ``SendTtsVoice``); ``transport`` holds what their HTTP clients share (a pooled
session, the mapping of transport failures and HTTP statuses to the error classes, and the
scrubbing of credentials from every text that leaves a client).
"""
