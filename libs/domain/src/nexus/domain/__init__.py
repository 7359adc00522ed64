"""nexus-domain: entities, value objects, state machines and permission rules. Pure: no I/O."""
