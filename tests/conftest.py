"""Shared test setup: the ``airi`` pytest plugin (airi_core.testing) provides the fixtures
``airi_hub``, ``airi_hub_factory`` and ``airi_connect``."""
