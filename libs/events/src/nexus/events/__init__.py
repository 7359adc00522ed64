"""nexus-events: the subject catalog, envelopes, payloads, streams and the publish/consume helpers."""
