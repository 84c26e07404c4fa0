"""Use cases the web views call: read -> plan -> record (:mod:`.service`), what intake
observed (:mod:`.observe`), the read side for the page and API (:mod:`.readside`) and the rules in
force (:mod:`.reload`)."""
