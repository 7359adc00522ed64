"""nexus-core-api."""
