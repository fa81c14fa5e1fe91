"""``cluster``: several hub instances act as one hub through a NATS server (``[cluster]``).

Off unless ``[cluster] url`` (or ``AIRI_CLUSTER_URL``) is set; then it needs ``nats-py``
(``pip install 'airi-hub[nats]'``). Instances with the same ``name`` form one hub.

**Model.** Each instance keeps, for every connection of every other instance, a *mirror*: a
peer without a socket (``Hub.add_remote_peer``, id ``<connection id>@<instance id>``) whose
authentication, identity, modules, health and consumer registrations follow the real one. So
the registry, the routing (destinations, policy, devtools bypass), consumer selection and
``ui:configure`` run on every instance exactly as on one hub, over local peers and mirrors
alike; what is routed to a mirror goes to its instance (``Hub.set_remote_delivery``), which
writes the frame to the real peer as it was routed (byte for byte).

**Subjects** (``<name>`` = ``[cluster] name``):

- ``airi.<name>.ctl``: every instance publishes what changes about its own connections, in
  order: authenticated / identity (``peer``), ``announce``, ``leave`` (with the reason),
  ``health``, ``consumer`` (a registration, replayed on the mirrors), plus ``hb`` every
  ``instance_timeout_ms / 3``, ``hello`` when it (re)joins and ``bye`` when it stops;
- ``airi.<name>.to.<instance>``: frames for that instance's connections (one message per
  routed event and instance, listing the receivers: a broadcast crosses once per instance) and
  the full ``state`` an instance sends to one that joined.

**Joining and faults.** A joining (or reconnecting) instance says ``hello``; every other
instance answers with its full state and gets the joiner's back, replacing whatever it had
mirrored of it (no module listed twice, none kept that left meanwhile). An instance not heard
for ``instance_timeout_ms`` (checked every third of it) is gone: its mirrors are de-announced
with reason ``instance lost``; a graceful shutdown de-announces at once (``server shutdown``,
each connection's own ``leave``). While the broker is unreachable each instance serves its own
connections, logs the loss once, answers ``/readyz`` 503 ``cluster broker disconnected``, drops
what it would have sent to other instances, and resynchronises on reconnect.

**Guarantees.** At most once across instances: a frame for another instance is handed to NATS
(core NATS, no persistence); if the link or the other instance fails meanwhile it is lost, and
nobody is told. Per-sender order holds (one publisher per instance, one subject per target
instance). Consumer delivery picks one consumer cluster-wide on the sender's instance, so it is
never delivered twice; round-robin and sticky picks are shared (``pick``), so the cluster
rotates as one hub does. Consecutive messages for one instance are batched into one broker
message; a frame bigger than the broker's payload limit crosses in consecutive parts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import ssl
import time
from collections.abc import Generator, Iterator
from typing import Any

import orjson
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from airi_core import Accept, Announcement, Event, Hub, Peer, Reject, hookimpl

#: Control events whose effect other instances replay on the mirror.
CONSUMER_EVENTS = frozenset({"module:consumer:register", "module:consumer:unregister"})
#: Events after which a connection's identity, aliases or extension may have changed.
IDENTITY_EVENTS = frozenset({"peer:authenticate", "extension:authenticate", "extension:announce"})
#: Frames queued for the broker at most (beyond: dropped, counted in ``cluster_dropped``).
MAX_QUEUE = 100_000


class ClusterSettings(BaseModel):
    """``[cluster]``."""

    model_config = ConfigDict(extra="forbid")
    #: ``nats://host:port`` (comma-separate several); unset = no cluster (env ``AIRI_CLUSTER_URL``).
    url: str | None = None
    #: Instances with the same name form one hub (the subject prefix).
    name: str = Field("airi", min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    #: An instance silent this long is gone everywhere (its modules de-announced).
    instance_timeout_ms: int = Field(3000, ge=300)
    #: Credentials and TLS, as nats-py takes them.
    token: SecretStr | None = None
    user: str | None = None
    password: SecretStr | None = None
    creds_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: How long one connection attempt to the broker may take.
    connect_timeout_ms: int = Field(2000, ge=100)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


#: Name under which the link's hooks are registered when a cluster is configured.
LINK_PLUGIN = "cluster.link"


class Cluster:
    """The entry point: owns ``[cluster]``; when a URL is configured it registers the link
    (:class:`ClusterLink`, the hooks that mirror and forward), so that a hub without a cluster
    runs nothing of it."""

    airi_config_section = "cluster"

    def __init__(self) -> None:
        self.link: ClusterLink | None = None

    @hookimpl
    def airi_config_model(self) -> type[BaseModel]:
        return ClusterSettings

    @hookimpl
    async def airi_startup(self, hub: Hub) -> None:
        cfg = hub.plugin_config(self)
        settings = cfg if isinstance(cfg, ClusterSettings) else ClusterSettings()
        url = settings.url or os.environ.get("AIRI_CLUSTER_URL") or None
        if not url:
            return  # the embedded default: nothing runs
        try:
            import nats  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("[cluster] url is set but nats-py is missing: pip install 'airi-hub[nats]'") from exc
        self.link = ClusterLink(settings, url)
        hub.plugins.register(self.link, LINK_PLUGIN)
        await self.link.start(hub)

    @hookimpl
    async def airi_shutdown(self, hub: Hub) -> None:
        link, self.link = self.link, None
        if link is not None:
            await link.stop(hub)
            hub.plugins.unregister(LINK_PLUGIN)


class ClusterLink:
    """The cluster at work: mirrors, forwarding, the broker link (see the module docstring)."""

    def __init__(self, settings: ClusterSettings, url: str) -> None:
        self.settings = settings
        self.url: str | None = url
        self.hub: Hub | None = None
        self.nc: Any = None
        self.connected = False
        self._prefix = ""
        self._ctl = ""
        self._me = ""
        self._instances: dict[str, float] = {}  # other instance -> when last heard (monotonic)
        self._mirrors: dict[str, dict[str, Peer]] = {}  # instance -> its connection id -> mirror
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._published: dict[Peer, bytes] = {}  # the last identity snapshot sent per local peer
        self._consumers: dict[Peer, dict[bytes, dict[str, Any]]] = {}  # local peer -> its registrations
        self._announces: dict[Peer, dict[str, dict[str, Any]]] = {}  # local peer -> its announces (by key)
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._lost_logged = False
        self._stopping = False
        self._first_link = asyncio.Event()  # set once the broker link is up the first time
        self._consumers_plugin: Any = None
        self._applying_pick = False
        self._collector: Any = None
        self._auth_plugin: Any = None
        self._parts: dict[str, list[bytes]] = {}  # origin -> parts of a big frame so far

    async def start(self, hub: Hub) -> None:
        self.hub = hub
        self._me = hub.instance_id
        self._prefix = f"airi.{self.settings.name}"
        self._ctl = f"{self._prefix}.ctl"
        hub.stats.setdefault("cluster_frames_out", 0)
        hub.stats.setdefault("cluster_frames_in", 0)
        hub.stats.setdefault("cluster_dropped", 0)
        hub.set_remote_delivery(self._deliver)
        hub.readiness.add_check("cluster", self._readiness)
        if getattr(hub, "metrics", None) is not None:
            self._collector = _LinkCollector(self)
            hub.metrics.registry.register(self._collector)
        auth = hub.plugins.get("auth")
        self._auth_plugin = auth if hasattr(auth, "grant_remote") else None
        consumers = hub.plugins.get("consumers")
        if consumers is not None and hasattr(consumers, "pick_listeners"):
            # round-robin and sticky are one state for the whole cluster, as on one hub
            self._consumers_plugin = consumers
            consumers.pick_listeners.append(self._on_pick)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._connect_loop()),
            loop.create_task(self._writer()),
            loop.create_task(self._reader()),
            loop.create_task(self._ticker()),
        ]
        # wait a little for the first connection, so that the summary can say how it went
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._until_connected(), self.settings.connect_timeout_ms / 1000)
        hub.log.info(
            "cluster '%s' via %s as instance %s: %s", self.settings.name, _redact(self.url), self._me,
            "connected" if self.connected else "broker unreachable, serving local peers meanwhile",
        )

    async def _until_connected(self) -> None:
        await self._first_link.wait()

    def _readiness(self) -> str | None:
        return None if self.connected else "cluster broker disconnected"

    def airi_summary(self) -> tuple[str, str]:
        """The ``cluster`` line of ``airi serve``'s summary."""
        others = len(self._instances)
        return "cluster", (
            f"'{self.settings.name}' via {_redact(self.url)} as instance {self._me}: "
            f"{'connected' if self.connected else 'broker unreachable'}, "
            f"{others} other instance{'s' if others != 1 else ''}"
        )

    def state(self) -> dict[str, Any]:
        """What ``airi serve`` and operators want to know: link, instances, mirrored peers."""
        return {
            "name": self.settings.name,
            "instance": self._me,
            "connected": self.connected,
            "instances": sorted(self._instances),
            "remote_peers": sum(len(m) for m in self._mirrors.values()),
        }

    # -- the broker link ---------------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        cfg = self.settings
        opts: dict[str, Any] = {
            "servers": [u.strip() for u in (self.url or "").split(",") if u.strip()],
            "name": f"airi-hub {self._me}",
            "connect_timeout": cfg.connect_timeout_ms / 1000,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.25,
            "ping_interval": max(1, cfg.instance_timeout_ms // 3000),
            "max_outstanding_pings": 3,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "error_cb": self._on_error,
            "closed_cb": self._on_closed,
        }
        if cfg.token is not None:
            opts["token"] = cfg.token.get_secret_value()
        if cfg.user is not None:
            opts["user"] = cfg.user
        if cfg.password is not None:
            opts["password"] = cfg.password.get_secret_value()
        if cfg.creds_file:
            opts["user_credentials"] = cfg.creds_file
        if cfg.tls_ca_file or cfg.tls_cert_file:
            ctx = ssl.create_default_context(cafile=cfg.tls_ca_file)
            if cfg.tls_cert_file:
                ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
            opts["tls"] = ctx
        return opts

    async def _connect_loop(self) -> None:
        """Connect (retrying every second until the broker answers), subscribe and say hello;
        nats-py reconnects by itself after that."""
        import nats

        hub = self.hub
        assert hub is not None
        while self.nc is None:
            try:
                nc = await nats.connect(**self._options())
            except Exception as exc:
                if not self._lost_logged:
                    hub.log.warning("cluster broker %s unreachable (%s); retrying every second", _redact(self.url), exc)
                    self._lost_logged = True
                await asyncio.sleep(1.0)
                continue
            self.nc = nc
            await nc.subscribe(self._ctl, cb=self._on_message)
            await nc.subscribe(f"{self._prefix}.to.{self._me}", cb=self._on_message)
            self._joined()

    def _joined(self) -> None:
        hub = self.hub
        assert hub is not None
        if self._lost_logged:
            hub.log.warning("cluster broker %s reachable again", _redact(self.url))
            self._lost_logged = False
        self.connected = True
        self._first_link.set()
        self._publish(self._ctl, {"op": "hello"})
        self._wake.set()

    async def _on_disconnected(self) -> None:
        if self.connected and self.hub is not None and not self._lost_logged and not self._stopping:
            self.hub.log.warning("cluster broker link lost; serving local peers, retrying")
            self._lost_logged = True
        self.connected = False

    async def _on_reconnected(self) -> None:
        self._joined()

    async def _on_error(self, exc: Exception) -> None:
        if self.hub is not None:
            self.hub.log.debug("cluster broker: %s", exc)

    async def _on_closed(self) -> None:
        self.connected = False

    async def stop(self, hub: Hub) -> None:
        if self.hub is None:
            return
        self._stopping = True
        if self._collector is not None and getattr(hub, "metrics", None) is not None:
            with contextlib.suppress(Exception):
                hub.metrics.registry.unregister(self._collector)
            self._collector = None
        consumers = self._consumers_plugin
        if consumers is not None and self._on_pick in consumers.pick_listeners:
            consumers.pick_listeners.remove(self._on_pick)
        hub.set_remote_delivery(None)
        nc = self.nc
        if nc is not None and self.connected:
            self._publish(self._ctl, {"op": "bye"})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain_queue(), 2.0)
                await asyncio.wait_for(nc.flush(), 2.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2.0)
        self.nc = None
        self.connected = False
        hub.readiness.remove_check("cluster")
        self.hub = None

    async def _drain_queue(self) -> None:
        while self._queue:
            await asyncio.sleep(0.005)

    # -- sending -----------------------------------------------------------------------------------
    def _publish(self, subject: str, message: dict[str, Any] | bytes) -> None:
        """Queue a message for the broker, in order (one writer task publishes them)."""
        if not self.connected:
            if self.hub is not None:
                self.hub.stats["cluster_dropped"] += 1
            return
        if len(self._queue) >= MAX_QUEUE:
            if self.hub is not None:
                self.hub.stats["cluster_dropped"] += 1
            return
        if isinstance(message, dict):
            message["from"] = self._me
            payload = b"C" + _dumps(message)
        else:
            payload = message
        self._queue.append((subject, payload))
        if not self._wake.is_set():
            self._wake.set()

    async def _writer(self) -> None:
        """Publish what is queued, in order; consecutive messages for one subject go as one
        broker message (``B`` + length-prefixed messages) up to the broker's payload limit, so
        a burst costs the broker and the receiver one message, not one per frame."""
        queue = self._queue
        while True:
            await self._wake.wait()
            self._wake.clear()
            nc = self.nc
            limit = self._max_payload()
            while queue and nc is not None:
                subject, payload = queue.popleft()
                if queue and queue[0][0] == subject and len(payload) + 8 < limit:
                    batch = [payload]
                    size = len(payload) + 5
                    while queue and queue[0][0] == subject and size + len(queue[0][1]) + 4 <= limit:
                        more = queue.popleft()[1]
                        batch.append(more)
                        size += len(more) + 4
                    if len(batch) > 1:
                        payload = b"B" + b"".join(len(m).to_bytes(4, "big") + m for m in batch)
                try:
                    await nc.publish(subject, payload)
                except Exception as exc:
                    if self.hub is not None:
                        self.hub.stats["cluster_dropped"] += 1
                        self.hub.log.debug("cluster publish failed: %s", exc)
                    if not self.connected:  # the link went down under us: what is queued is lost
                        if self.hub is not None:
                            self.hub.stats["cluster_dropped"] += len(queue)
                        queue.clear()
                        break

    def _deliver(self, peers: list[Peer], text: str) -> None:
        """The hub's remote delivery: one message per instance, listing its receivers."""
        hub = self.hub
        if hub is None:
            return
        by_instance: dict[str, list[str]] = {}
        for peer in peers:
            origin = peer.origin
            if origin is not None:
                by_instance.setdefault(origin, []).append(peer.state.get("cluster", peer.id))
        body = text.encode()
        limit = self._max_payload()
        for origin, ids in by_instance.items():
            hub.stats["cluster_frames_out"] += 1
            subject = f"{self._prefix}.to.{origin}"
            payload = b"D" + _dumps(ids) + b"\n" + body
            if len(payload) <= limit:
                self._publish(subject, payload)
                continue
            # bigger than the broker takes in one message: consecutive parts, joined there
            # (one writer publishes them back to back on one subject, so they arrive in order)
            step = max(limit - 256, 1024)
            parts = [payload[i:i + step] for i in range(0, len(payload), step)]
            for k, part in enumerate(parts):
                head = _dumps({"from": self._me, "i": k, "n": len(parts)})
                self._publish(subject, b"P" + head + b"\n" + part)

    # -- what changes about local connections --------------------------------------------------------
    def _snapshot(self, peer: Peer) -> dict[str, Any]:
        auth = self._auth_plugin
        credential = auth.credential_of(peer) if auth is not None else None
        return {
            "credential": credential,
            "id": peer.id,
            "remote": peer.remote,
            "authenticated": peer.authenticated,
            "identity": peer.identity,
            "source": peer.source if peer.source is not peer.identity else None,
            "verified": peer.verified,
            "extension": peer.extension,
            "aliases": sorted(peer.aliases),
        }

    def _publish_peer(self, peer: Peer) -> None:
        if self.hub is None or peer.origin is not None or peer.closed:
            return
        snap = self._snapshot(peer)
        key = _dumps(snap)
        if self._published.get(peer) == key:
            return
        self._published[peer] = key
        self._publish(self._ctl, {"op": "peer", "peer": snap})

    @hookimpl
    def airi_peer_authenticated(self, peer: Peer) -> None:
        self._publish_peer(peer)

    @hookimpl(trylast=True)
    def airi_source_claimed(self, peer: Peer) -> None:
        self._publish_peer(peer)  # after any adoption the other plugins made

    @hookimpl(wrapper=True)
    def airi_announce(self, peer: Peer, announcement: Announcement, event: Event) -> Generator[None, Any, Any]:
        result = yield
        if self.hub is not None and peer.origin is None and not isinstance(result, Reject) and not peer.closed:
            ann = announcement
            record = {
                "family": ann.family, "name": ann.name, "index": ann.index, "identity": ann.identity,
                "data": ann.data, "event_id": event.id,
            }
            key = "module" if ann.family == "module" else f"extension:{ann.identity.get('id')}"
            self._announces.setdefault(peer, {})[key] = record
            self._publish(self._ctl, {"op": "announce", "peer": peer.id, **record})
            self._publish_peer(peer)
        return result

    @hookimpl(wrapper=True)
    def airi_event(self, peer: Peer, event: Event) -> Generator[None, Any, Any]:
        result = yield
        if self.hub is None or peer.origin is not None:
            return result
        etype = event.type
        if etype in CONSUMER_EVENTS and isinstance(result, Accept):
            body = {"type": etype, "data": event.data}
            data = event.data
            key = _dumps([data.get("event"), data.get("mode"), data.get("group")])
            regs = self._consumers.setdefault(peer, {})
            if etype == "module:consumer:register":
                regs[key] = body
            else:
                regs.pop(key, None)
            self._publish(self._ctl, {"op": "consumer", "peer": peer.id, "event": body})
        elif etype in IDENTITY_EVENTS:
            self._publish_peer(peer)
        return result

    def _ref(self, peer: Peer) -> list[str]:
        """``[instance, connection id]`` naming ``peer`` on every instance."""
        if peer.origin is None:
            return [self._me, peer.id]
        return [peer.origin, str(peer.state.get("cluster", peer.id))]

    def _resolve(self, ref: Any) -> Peer | None:
        if not (isinstance(ref, list) and len(ref) == 2 and all(isinstance(x, str) for x in ref)):
            return None
        origin, rid = ref
        if origin == self._me:
            peer = self.hub.registry.get(rid) if self.hub is not None else None
            return peer if peer is not None and peer.origin is None else None
        return self._mirror(origin, rid)

    def _on_pick(self, key: tuple[str, str], selection: str, peer: Peer, sticky_key: str | None) -> None:
        if self._applying_pick:
            return
        self._publish(self._ctl, {"op": "pick", "key": list(key), "selection": selection,
                                  "peer": self._ref(peer), "sticky": sticky_key})

    def _apply_pick(self, msg: dict[str, Any]) -> None:
        consumers = self._consumers_plugin
        key = msg.get("key")
        peer = self._resolve(msg.get("peer"))
        if consumers is None or peer is None or not (isinstance(key, list) and len(key) == 2):
            return
        sticky = msg.get("sticky")
        self._applying_pick = True
        try:
            consumers.apply_pick((str(key[0]), str(key[1])), str(msg.get("selection")), peer,
                                 sticky if isinstance(sticky, str) else None)
        finally:
            self._applying_pick = False

    @hookimpl
    def airi_peer_health_changed(self, peer: Peer, healthy: bool, reason: str) -> None:
        if self.hub is not None and peer.origin is None:
            self._publish(self._ctl, {"op": "health", "peer": peer.id, "healthy": healthy, "reason": reason})

    @hookimpl
    def airi_peer_disconnected(self, peer: Peer, reason: str) -> None:
        if self.hub is None:
            return
        if peer.origin is not None:
            mirrors = self._mirrors.get(peer.origin)
            if mirrors is not None and mirrors.get(peer.state.get("cluster", "")) is peer:
                del mirrors[peer.state["cluster"]]
            return
        self._published.pop(peer, None)
        self._consumers.pop(peer, None)
        self._announces.pop(peer, None)
        if peer.authenticated:
            self._publish(self._ctl, {"op": "leave", "peer": peer.id, "reason": reason})

    def _full_state(self) -> list[dict[str, Any]]:
        hub = self.hub
        assert hub is not None
        peers = []
        for peer in hub.registry.authenticated():
            if peer.origin is not None:
                continue
            snap = self._snapshot(peer)
            snap["healthy"] = peer.healthy
            snap["announces"] = list(self._announces.get(peer, {}).values())
            snap["consumers"] = list(self._consumers.get(peer, {}).values())
            peers.append(snap)
        return peers

    def _send_state(self, to: str, want: bool) -> None:
        self._publish(f"{self._prefix}.to.{to}", {"op": "state", "want": want, "peers": self._full_state()})

    # -- receiving -------------------------------------------------------------------------------------
    async def _on_message(self, msg: Any) -> None:
        self._inbox.put_nowait((msg.subject, msg.data))

    async def _reader(self) -> None:
        """Apply what the broker brings, one message at a time, in arrival order."""
        while True:
            _subject, data = await self._inbox.get()
            if data[:1] == b"B":  # a batch: its messages in order
                at, end = 1, len(data)
                while at + 4 <= end:
                    size = int.from_bytes(data[at:at + 4], "big")
                    await self._handle(data[at + 4:at + 4 + size])
                    at += 4 + size
            else:
                await self._handle(data)

    async def _handle(self, data: bytes) -> None:
        try:
            kind = data[:1]
            if kind == b"D":
                self._delivered(data)
            elif kind == b"P":
                self._part(data)
            else:
                await self._control(orjson.loads(data[1:]))
        except Exception:  # a bad message must not stop the link
            if self.hub is not None:
                self.hub.log.exception("cluster message failed")

    def _max_payload(self) -> int:
        nc = self.nc
        size = getattr(nc, "max_payload", 0) if nc is not None else 0
        return size if isinstance(size, int) and size > 0 else 1024 * 1024

    def _part(self, data: bytes) -> None:
        """One part of a frame too big for one broker message; the last part delivers it."""
        head, _, chunk = data[1:].partition(b"\n")
        info = orjson.loads(head)
        origin, index, total = info.get("from"), info.get("i"), info.get("n")
        if not isinstance(origin, str) or not isinstance(index, int) or not isinstance(total, int):
            return
        parts = self._parts.setdefault(origin, [])
        if index == 0:
            parts.clear()
        if index != len(parts):  # a part went missing (the link failed meanwhile): drop the frame
            self._parts.pop(origin, None)
            return
        parts.append(chunk)
        if len(parts) == total:
            del self._parts[origin]
            self._delivered(b"".join(parts))

    def _delivered(self, data: bytes) -> None:
        hub = self.hub
        if hub is None:
            return
        head, _, body = data[1:].partition(b"\n")
        registry = hub.registry
        peers = [p for p in (registry.get(i) for i in orjson.loads(head)) if p is not None and p.origin is None]
        if peers:
            hub.stats["cluster_frames_in"] += 1
            hub.deliver(peers, body.decode())

    async def _control(self, msg: dict[str, Any]) -> None:
        hub = self.hub
        origin = msg.get("from")
        if hub is None or not isinstance(origin, str) or origin == self._me:
            return
        op = msg.get("op")
        known = origin in self._instances
        self._instances[origin] = time.monotonic()
        if op == "hb":
            if not known:
                self._send_state(origin, want=True)  # one we never met (it joined while we were away)
        elif op == "hello":
            self._send_state(origin, want=True)
        elif op == "state":
            await self._replace(origin, msg.get("peers") or [])
            if msg.get("want"):
                self._send_state(origin, want=False)
        elif op == "bye":
            await self._drop_instance(origin, "server shutdown")
        elif op == "peer":
            self._apply_peer(origin, msg["peer"])
        elif op == "announce":
            mirror = self._mirror(origin, msg["peer"])
            if mirror is not None:
                await self._announce(mirror, msg)
        elif op == "leave":
            mirror = self._mirror(origin, msg["peer"])
            if mirror is not None:
                await hub.remove_remote_peer(mirror, str(msg.get("reason") or "connection closed"))
        elif op == "health":
            mirror = self._mirror(origin, msg["peer"])
            if mirror is not None:
                hub.set_health(mirror, bool(msg.get("healthy")), str(msg.get("reason") or ""))
        elif op == "pick":
            self._apply_pick(msg)
        elif op == "consumer":
            mirror = self._mirror(origin, msg["peer"])
            if mirror is not None:
                await self._replay(mirror, msg["event"])

    def _mirror(self, origin: str, peer_id: Any) -> Peer | None:
        return self._mirrors.get(origin, {}).get(peer_id) if isinstance(peer_id, str) else None

    def _apply_peer(self, origin: str, snap: dict[str, Any]) -> Peer | None:
        """Create or update the mirror of ``snap`` (authentication, identity, extension, aliases)."""
        hub = self.hub
        assert hub is not None
        rid = snap.get("id")
        if not isinstance(rid, str):
            return None
        mirrors = self._mirrors.setdefault(origin, {})
        mirror = mirrors.get(rid)
        if mirror is None or mirror.closed:
            mirror = hub.add_remote_peer(origin, rid, str(snap.get("remote") or ""))
            mirror.state["cluster"] = rid
            mirrors[rid] = mirror
        credential = snap.get("credential")
        if isinstance(credential, str) and self._auth_plugin is not None and self._auth_plugin.credential_of(mirror) != credential:
            self._auth_plugin.grant_remote(hub, mirror, credential)  # its permissions hold here too
        if snap.get("authenticated") and not mirror.authenticated:
            hub.authenticate_remote(mirror)
        registry = hub.registry
        extension = snap.get("extension")
        if extension != mirror.extension:
            registry.set_extension(mirror, extension if isinstance(extension, dict) else None)
        identity = snap.get("identity")
        source = snap.get("source")
        verified = bool(snap.get("verified"))
        if identity != mirror.identity or (source or identity) != mirror.source or verified != mirror.verified:
            registry.adopt(mirror, identity, source, verified)
        for alias in snap.get("aliases") or ():
            if isinstance(alias, str):
                registry.add_alias(mirror, alias)
        return mirror

    async def _announce(self, mirror: Peer, msg: dict[str, Any]) -> None:
        hub = self.hub
        assert hub is not None
        raw = msg.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        identity = msg.get("identity")
        if not isinstance(identity, dict) or not isinstance(msg.get("name"), str):
            return
        family = "extension" if msg.get("family") == "extension" else "module"
        possible = data.get("possibleEvents")
        ann = Announcement(msg["name"], msg.get("index"), identity, possible if isinstance(possible, list) else [], data, family)
        event_id = msg.get("event_id")
        meta: dict[str, Any] = {"event": {"id": event_id}} if isinstance(event_id, str) else {}
        etype = "module:announce" if family == "module" else "extension:module:announce"
        await hub.announce(mirror, ann, Event(etype, data, meta or None))

    async def _replay(self, mirror: Peer, body: Any) -> None:
        hub = self.hub
        assert hub is not None
        if not isinstance(body, dict) or body.get("type") not in CONSUMER_EVENTS or not isinstance(body.get("data"), dict):
            return
        result = hub.replay(mirror, Event(body["type"], body["data"]))
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result

    async def _replace(self, origin: str, peers: list[Any]) -> None:
        """An instance's full state: mirror exactly these connections of it."""
        hub = self.hub
        assert hub is not None
        present = {p.get("id") for p in peers if isinstance(p, dict)}
        for rid, mirror in list(self._mirrors.get(origin, {}).items()):
            if rid not in present:
                await hub.remove_remote_peer(mirror, "connection closed")
        for snap in peers:
            if not isinstance(snap, dict):
                continue
            found = self._apply_peer(origin, snap)
            if found is None:
                continue
            mirror = found
            for record in snap.get("announces") or ():
                if isinstance(record, dict):
                    await self._announce(mirror, record)
            for body in snap.get("consumers") or ():
                await self._replay(mirror, body)
            self._apply_peer(origin, snap)  # the identity as it is now (after the announces)
            healthy = snap.get("healthy", True)
            if mirror.healthy != bool(healthy):
                hub.set_health(mirror, bool(healthy), "heartbeat late" if not healthy else "activity")

    async def _drop_instance(self, origin: str, reason: str) -> None:
        hub = self.hub
        assert hub is not None
        self._instances.pop(origin, None)
        mirrors = self._mirrors.pop(origin, {})
        if mirrors:
            hub.log.info("cluster instance %s gone (%s): %d connections de-announced", origin, reason, len(mirrors))
        for mirror in list(mirrors.values()):
            await hub.remove_remote_peer(mirror, reason)

    async def _ticker(self) -> None:
        """Say we are alive and forget instances not heard for ``instance_timeout_ms``."""
        period = self.settings.instance_timeout_ms / 3000
        timeout = self.settings.instance_timeout_ms / 1000
        while True:
            await asyncio.sleep(period)
            if self.connected:
                self._publish(self._ctl, {"op": "hb"})
            now = time.monotonic()
            for origin, seen in list(self._instances.items()):
                if now - seen > timeout:
                    await self._drop_instance(origin, "instance lost")


class _LinkCollector(Collector):
    """``/metrics``: the broker link, the other instances, the mirrored connections."""

    def __init__(self, link: ClusterLink) -> None:
        self.link = link

    def collect(self) -> Iterator[Metric]:
        state = self.link.state()
        yield GaugeMetricFamily("airi_cluster_connected", "1 while the cluster broker link is up", value=1 if state["connected"] else 0)
        yield GaugeMetricFamily("airi_cluster_instances", "other hub instances of the cluster heard from", value=len(state["instances"]))
        yield GaugeMetricFamily("airi_cluster_remote_peers", "connections of other instances mirrored here", value=state["remote_peers"])


def _redact(url: str | None) -> str:
    """A broker URL without credentials, for logs."""
    if not url:
        return ""
    out = []
    for part in url.split(","):
        scheme, sep, rest = part.strip().partition("://")
        if sep and "@" in rest:
            rest = "***@" + rest.split("@", 1)[1]
        out.append(f"{scheme}{sep}{rest}")
    return ",".join(out)
