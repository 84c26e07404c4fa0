"""What runs from the delivery loop: the deliverer draining the outbox
(:mod:`.deliverer`), the leased escalation timers (:mod:`.escalation`) and background jobs
(:mod:`.jobs`: shift notices, :mod:`.notices`; Alertmanager silences, :mod:`.silences`)."""
