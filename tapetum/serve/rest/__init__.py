"""What the REST app's routers share: error bodies and handlers (:mod:`.errors`), the
auth-and-rate-limit dependencies (:mod:`.guards`), bounded upload reading
(:mod:`.uploads`), Prometheus metrics (:mod:`.metrics`) and the per-app state
(:mod:`.state`).

The routers themselves are :mod:`tapetum.serve.routes`; :func:`tapetum.serve.app.create_app`
wires both together.
"""
