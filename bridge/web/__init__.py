"""HTTP: the app factory (:mod:`.app`) composing the webhook/API views, the operator page
(:mod:`.page`), the acknowledgement views (:mod:`.ack`) and their guard (:mod:`.guard`: auth,
CSRF, session)."""
