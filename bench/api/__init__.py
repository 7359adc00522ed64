"""API benchmark: core-api under granian on loopback, driven by oha at fixed rates (issue 3)."""
