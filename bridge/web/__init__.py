"""HTTP: the app factory (:mod:`.app`) composing the webhook/API views, the operator page
(:mod:`.page`), the acknowledgement views (:mod:`.ack`), the calendar feeds
(:mod:`.calendar`) and their guard (:mod:`.guard`: auth, CSRF, session)."""
