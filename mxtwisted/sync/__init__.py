"""``/sync`` and filters (Client-Server API, "Syncing" and "Filtering").

* :mod:`mxtwisted.sync.filters` -- the filter model, its validation and matching (pure);
* :mod:`mxtwisted.sync.tokens` -- ``next_batch`` / ``since`` tokens (pure);
* :mod:`mxtwisted.sync.handler` -- :class:`~mxtwisted.sync.handler.SyncHandler`, which builds
  sync responses and long-polls through the notifier.
"""
