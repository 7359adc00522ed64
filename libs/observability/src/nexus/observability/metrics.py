"""Metric families defined once for code more than one process hosts (a test process, a bench, a service).
Each family has one owner that counts it: a number counted by two services is counted twice."""

from prometheus_client import Counter

# core-api counts final states (succeeded, failed, cancelled, timed_out) and retried attempts, once each: it
# owns final states. The worker counts what happens to executions in nexus_run_executions_total.
RUNS_TOTAL = Counter("nexus_runs", "Runs by final state (and retried attempts), counted once by core-api", ["status"])
