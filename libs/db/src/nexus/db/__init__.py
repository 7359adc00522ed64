"""nexus-db: beanie documents, indexes and connection setup. Only core-api writes through it."""
