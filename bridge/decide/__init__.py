"""Pure decisions: episodes, routing, rendering with its cost budget, the plan of what to
send, and the preview of it."""
