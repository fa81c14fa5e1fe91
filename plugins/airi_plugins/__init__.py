"""The AIRI hub's built-in behaviours, each an ``airi.plugins`` entry point like any third-party
plugin: token authentication, the module registry, heartbeats and liveness, devtools bypass,
routing policy, destinations, consumer delivery and ``ui:configure``."""
