"""Metrics more than one service reports, defined once (a process may host several services' code)."""

from prometheus_client import Counter

# core-api counts final states (succeeded, failed, cancelled, timed_out, retried); the worker counts
# what it sees happen to executions (launched, lost, timed_out).
RUNS_TOTAL = Counter("nexus_runs", "Runs by status, as core-api and the worker see them", ["status"])
