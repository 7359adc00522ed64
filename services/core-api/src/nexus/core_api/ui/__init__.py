"""The admin web UI under /ui: server-rendered pages over the API itself (every read and every change
goes through the same route handlers, guards and schemas as /v1, in-process), made live with htmx and SSE."""
