"""airi-route-filter: an example AIRI hub routing plugin.

Drops events by type glob or by a value in their data, and redirects events to one announced
module, as configured in the ``[plugins.route-filter]`` table of ``airi.toml``. The hub loads it
through the ``airi.plugins`` entry point declared in this distribution's ``pyproject.toml``.
"""

from __future__ import annotations

from .plugin import RouteFilter
from .settings import RouteFilterSettings, Rule

__all__ = ["RouteFilter", "RouteFilterSettings", "Rule"]
__version__ = "0.1.0"
