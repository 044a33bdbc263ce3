"""Serving: the REST API and its protection layer.

- ``tapetum.serve.auth``: API keys (argon2id hashes in SQLite) and scopes.
- ``tapetum.serve.ratelimit``: per-key, per-route rate limits (memory or Redis storage).

Nothing is imported here: the web stack and its security dependencies are the ``serve``
extra and load only when a serving module is imported.
"""
