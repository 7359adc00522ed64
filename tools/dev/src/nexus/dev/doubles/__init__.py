"""HTTP doubles of the external boards (Plane, Jira) for tests and benchmarks: real HTTP servers
speaking the documented paths, auth, pagination, rate limits and failures."""
