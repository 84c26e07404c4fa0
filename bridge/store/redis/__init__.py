"""The Redis store (one server, Sentinel, Cluster): the store's steps (:mod:`.store`), its key
map (:mod:`.keys`), its Lua scripts (:mod:`.lua`) and how it reaches the master
(:mod:`.topology`)."""
