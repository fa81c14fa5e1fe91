"""Shared test setup: the ``airi`` pytest plugin (``airi_core.testing``, loaded through its
``pytest11`` entry point) provides the fixtures ``airi_hub``, ``airi_hub_factory`` and
``airi_connect``. The project's tests use them as shipped, with no override here, so they are
exactly what plugin authors get."""
