"""alert-sms bridge: pages on-call engineers by SMS (Juhe) from Alertmanager and Grafana webhooks.

Data flows one way::

    webhook body --sources--> Batch[Alert] --routing/plan--> Notification --store--> outbox
    outbox --delivery--> Sender (providers.juhe.JuheClient, or providers.base.DryRunSender
                             without JUHE_KEY) --> SMS
"""

__version__ = "0.1.0"
