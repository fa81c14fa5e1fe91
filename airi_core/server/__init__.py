"""The server side of the hub.

- :mod:`.kernel`: :class:`~.kernel.Hub`, frame -> event -> hooks -> delivery decision, and the
  API plugins use;
- :mod:`.transport`: sockets, outboxes, write batching, backpressure, limits;
- :mod:`.hookspecs` (the hooks), :mod:`.hooks` (how the kernel calls them), :mod:`.plugins`
  (discovery and per-plugin settings);
- :mod:`.peer`, :mod:`.registry`, :mod:`.routing`, :mod:`.decisions`: the objects hooks receive
  and return;
- :mod:`.config`, :mod:`.logs`, :mod:`.cli`: settings, logging and the ``airi serve`` /
  ``plugins`` / ``config check`` commands.
"""
