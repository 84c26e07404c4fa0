"""What runs from the delivery loop: the deliverer draining the outbox
(:mod:`.deliverer`) and the leased escalation timers (:mod:`.escalation`)."""
