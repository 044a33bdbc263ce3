"""The REST API's routers, one module per concern, each a ``build_router(state, guards)``
factory (routes close over their app's state; nothing lives in module globals):

- :mod:`.health`: ``/healthz``, ``/readyz``, ``/metrics``;
- :mod:`.models`: ``/v1/models`` (listing for ``read``; loading and unloading for ``admin``);
- :mod:`.detect`: ``/v1/detect``, ``/v1/detect/batch``;
- :mod:`.streams`: ``/v1/streams`` and their live results (SSE).
- :mod:`.dashboard`: the live ``/dashboard`` page and its files (not in the OpenAPI
  document).

:func:`tapetum.serve.app.create_app` includes them in this order, which is the order of the
OpenAPI document.
"""
