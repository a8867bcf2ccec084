"""The fleet: worker slots <-> live Ray actors, the embedded local Ray, and the
search session that ties the chief, Ray and the fleet together."""
