"""nexus-dev: run the whole system on one machine (make run) and in tests."""
