"""nexus-agent-runner."""
