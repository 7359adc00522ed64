"""Benchmarks of libs/kernel against raw asyncio, raw pipes and raw nats-py (issue 6)."""
