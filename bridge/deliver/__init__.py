"""What runs from the delivery loop: delivery, escalation steps and other leased timers."""
