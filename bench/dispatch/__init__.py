"""Dispatch benchmarks (issue 5): task ready → runner's first event, and how many concurrent local
runs one machine holds with the scripted LLM. `uv run python -m bench.dispatch` prints JSON."""
