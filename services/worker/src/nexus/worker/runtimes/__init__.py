"""Runtimes turn a launch request into an isolated execution of agent-runner."""
