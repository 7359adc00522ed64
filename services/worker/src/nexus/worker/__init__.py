"""nexus-worker."""
