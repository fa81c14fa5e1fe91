"""Load generator for the AIRI hub benchmark: a separate process that drives a server over
WebSocket and prints one JSON result line per case on stdout.

    python bench/loadgen.py --url ws://127.0.0.1:P/ws --server-pid PID \\
        --scenario fanout --receivers 100 --size 64 --mode sat --duration 5
    python bench/loadgen.py --url ... --plan '{"session": "throughput", ...}'   # what run.py uses

The clients are a minimal raw WebSocket implementation on ``asyncio.Protocol`` (handshake,
masked client frames, unmasked server frames) so that one loadgen process can keep 100 receivers
fed while costing far less CPU than the server it measures. A receiver does not decode JSON: a
relayed benchmark message starts with a fixed prefix and carries its send time (monotonic ns,
15 zero-padded digits) at a fixed offset, so counting it and computing its end-to-end latency is
a prefix check and one ``int()`` of a slice. Sender and receivers live in the same process, so
the latency is measured on one clock.

Sessions (``plan.session``):

* ``throughput``: one sender + N receivers (all announce, optionally after authenticating), then
  the listed cases in order on the same connections. Case kinds: ``fanout`` (every receiver gets
  every message), ``targeted`` (each message goes to one ``module:rI``, round-robin), ``policy``
  (each message goes to one receiver through an ``and``/``or``/``label`` destination). Modes:
  ``sat`` (send as fast as the server takes it, with at most ``window`` messages in flight) and
  ``rate`` (paced at ``rate`` messages/s). ``source: true``: the messages carry the sender's
  announced identity as ``metadata.source`` (the hub forwards them byte for byte; without it,
  the hub re-encodes each message once to add it).
* ``slow``: a fan-out at saturation to N receivers, first alone, then with one more receiver that
  never reads (tiny SO_RCVBUF, reading paused); the others' rate in both phases and the server's
  RSS over time.
* ``stuck``: N receivers at a fixed rate, first all reading, then one stops reading; the others'
  p99 latency and longest gap between two arrivals in both phases, when the stuck one was
  dropped, the server's RSS growth.
* ``storm``: N clients connect at once, authenticate (when a token is given) and announce; how
  long until every one is routable (it received a probe event addressed to ``module:sI``), the
  control bytes the clients received, and the server's RSS per idle connection.

``loadgen_cpu_pct`` (this process) and ``server_cpu_pct`` (from ``/proc/<pid>/stat``) are
measured over each measurement window: a server near 100% with the loadgen well below shows that
the server, not the loadgen, is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import errno
import hashlib
import json
import os
import random
import select
import socket
import statistics
import sys
import time
from array import array
from typing import Any
from urllib.parse import urlsplit

try:  # the C masking helper that ships with websockets
    from websockets.speedups import apply_mask as _c_apply_mask
except Exception:  # pragma: no cover
    _c_apply_mask = None


def apply_mask(data: bytes, mask: bytes) -> bytes:
    if _c_apply_mask is not None:
        return _c_apply_mask(data, mask)
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


_T0 = time.monotonic_ns()


def now_ns() -> int:
    """Monotonic ns since this process started (fits the 15-digit timestamp field)."""
    return time.monotonic_ns() - _T0


#: Every relayed benchmark message starts with this (superjson-wrapped, as AIRI clients send),
#: followed by the 15-digit send time. The hub and the floor forward it byte for byte.
PREFIX = b'{"json":{"type":"bench","data":{"t":"'
PLEN = len(PREFIX)
TW = 15
MID = b'","p":"'
#: incomplete control frames at least this long are skipped rather than buffered (the frames a
#: client waits for, authenticated and pong, are far smaller)
SKIP_OVER = 16384
#: how a ``module:announced`` event written ``type`` first begins, plain and superjson-wrapped
#: (counted inline, without a call)
ANNOUNCED = b'{"type":"module:announced"'
ANNOUNCED_WRAPPED = b'{"json":' + ANNOUNCED
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked client frame (FIN set)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    mask = random.getrandbits(32).to_bytes(4, "little")
    return head + mask + apply_mask(payload, mask)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# -- server process probes (Linux /proc) ---------------------------------------------------------
def proc_cpu_s(pid: int | None) -> float:
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK_TCK
    except OSError:
        return 0.0


def proc_rss_kib(pid: int | None) -> int:
    if not pid:
        return 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def host_busy_s() -> float:
    """CPU seconds all CPUs of the machine spent not idle (from /proc/stat)."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f[:8]) - idle) / CLK_TCK


def others_pct(busy_s: float, server_s: float, loadgen_s: float, elapsed: float) -> float | None:
    """CPU used by everything but the server and this loadgen (other people's work, the kernel's
    softirq time not charged to either), in % of one core: a noise indicator."""
    if not elapsed or not busy_s:
        return None
    return round(100 * max(0.0, busy_s - server_s - loadgen_s) / elapsed, 1)


class Stats:
    """Counters shared by the receivers of one session."""

    def __init__(self) -> None:
        self.delivered = 0  # benchmark messages received by counted receivers
        self.recording = False
        self.rec_delivered = 0
        self.lat = array("q")
        self.need = 0
        self.waiter: asyncio.Future[bool] | None = None

    def reset(self) -> None:
        self.delivered = 0
        self.rec_delivered = 0
        self.lat = array("q")
        self.recording = False

    async def wait_delivered(self, target: int, timeout: float) -> bool:
        if self.delivered >= target:
            return True
        self.need = target
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(self.waiter, timeout)
        except asyncio.TimeoutError:
            return self.delivered >= target
        finally:
            self.need = 0
            self.waiter = None


#: where every connection's socket reads land (asyncio reads into it and hands it straight to
#: the connection's ``buffer_updated``): a fresh 256 KiB ``bytes`` per read, as a plain
#: ``asyncio.Protocol`` gets, costs page faults that made up a tenth of a storm's loadgen CPU
_SCRATCH = memoryview(bytearray(1 << 18))


class WSConn(asyncio.BufferedProtocol):
    """A minimal WebSocket client connection. Benchmark messages are counted (and their latency
    recorded while the session records); any other frame is "control" and only measured."""

    def __init__(self, st: Stats, host: str, port: int, path: str, name: str, counted: bool) -> None:
        self.st = st
        self.host, self.port, self.path, self.name = host, port, path, name
        self.counted = counted
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.key = base64.b64encode(os.urandom(16))
        self.hs: bytearray | None = bytearray()
        self.buf = bytearray()
        self.bench = 0
        self.first_bench = 0
        self.last_at = 0  # arrival of its last benchmark message while recording (ns)
        self.max_gap = 0  # the longest time between two arrivals while recording (ns)
        self.ctl_bytes = 0
        self.ctl_frames = 0
        # control frames by kind (storm: what the protocol requires vs the rest)
        self.ann_bytes = 0
        self.ann_frames = 0
        self.sync_bytes = 0
        self.sync_frames = 0
        self.sync_max = 0
        self.http_bytes = 0
        self.tx_bytes = 0
        self.needle: bytes | None = None
        self.found: asyncio.Future[None] | None = None
        self.found_at = 0.0
        self.paused = False
        self.resumed: asyncio.Future[None] | None = None
        self.close_code: int | None = None
        self.lost = False
        self.skip = 0

    # -- transport callbacks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        req = (
            b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ) % (self.path.encode(), self.host.encode(), self.port, self.key)
        transport.write(req)  # type: ignore[attr-defined]
        self.tx_bytes += len(req)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        err = ConnectionError(f"{self.name}: connection lost ({exc})")
        if not self.opened.done():
            self.opened.set_exception(err)
        if self.found is not None and not self.found.done():
            self.found.set_exception(err)
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SCRATCH

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_SCRATCH[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if self.hs is not None:
            if not self._handshake(data):
                return
            data = bytes(self._rest)
            if not data:
                return
        if self.skip:  # the rest of a large control frame: counted, never copied
            k = len(data)
            if k <= self.skip:
                self.skip -= k
                return
            data = data[self.skip :]
            self.skip = 0
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        got = 0
        st = self.st
        lat = st.lat if (st.recording and self.counted) else None
        now = time.monotonic_ns() - _T0
        ann = ann_bytes = 0
        startswith = buf.startswith
        announced, wrapped = ANNOUNCED, ANNOUNCED_WRAPPED
        # one iteration per frame, in the order of what a storm delivers most: a medium frame
        # (2-byte length) that is a ``module:announced`` is counted inline (its type is at a fixed
        # offset when the server writes ``type`` first; any other layout goes through _control)
        while n - pos >= 2:
            ln = buf[pos + 1] & 0x7F
            if ln == 126:
                if n - pos < 4:
                    break
                start = pos + 4
                end = start + ((buf[pos + 2] << 8) | buf[pos + 3])
            elif ln < 126:
                start = pos + 2
                end = start + ln
            else:
                if n - pos < 10:
                    break
                start = pos + 10
                end = start + int.from_bytes(buf[pos + 2 : pos + 10], "big")
            if end > n:
                if end - start >= SKIP_OVER and n - start >= PLEN and not buf.startswith(PREFIX, start):
                    # a large control frame (e.g. a registry sync): account for it now and
                    # skip its payload as it arrives instead of buffering it
                    self.ctl_bytes += end - pos
                    self.ctl_frames += 1
                    self._kind(buf, pos, start, min(n, start + 64), end - pos)
                    self.skip = end - n
                    pos = n
                break
            if end - start > 34 and (  # "...an[n]ounced"
                buf[start + 26] == 110 and startswith(wrapped, start) or buf[start + 18] == 110 and startswith(announced, start)
            ):
                ann += 1
                ann_bytes += end - pos
            elif startswith(PREFIX, start):
                got += 1
                if lat is not None:
                    lat.append(now - int(buf[start + PLEN : start + PLEN + TW]))
            else:
                self._control(buf, pos, start, end)
            pos = end
        if ann:
            self.ann_frames += ann
            self.ann_bytes += ann_bytes
            self.ctl_frames += ann
            self.ctl_bytes += ann_bytes
        if pos:
            del buf[:pos]
        if got:
            self.bench += got
            if lat is not None:
                if self.last_at and now - self.last_at > self.max_gap:
                    self.max_gap = now - self.last_at
                self.last_at = now
            if not self.first_bench:
                self.first_bench = now
            if self.counted:
                st.delivered += got
                if lat is not None:
                    st.rec_delivered += got
                if st.need and st.delivered >= st.need:
                    st.need = 0
                    w = st.waiter
                    if w is not None and not w.done():
                        w.set_result(True)

    def _handshake(self, data: bytes) -> bool:
        assert self.hs is not None
        self.hs += data
        end = self.hs.find(b"\r\n\r\n")
        if end < 0:
            if len(self.hs) > 65536 and self.transport is not None:
                self.transport.abort()
            return False
        head = bytes(self.hs[:end])
        self._rest = self.hs[end + 4 :]
        self.http_bytes = end + 4
        self.hs = None
        accept = base64.b64encode(hashlib.sha1(self.key + WS_GUID).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            if not self.opened.done():
                self.opened.set_exception(ConnectionError(f"{self.name}: handshake refused: {head[:80]!r}"))
            if self.transport is not None:
                self.transport.abort()
            return False
        if not self.opened.done():
            self.opened.set_result(None)
        return True

    def _kind(self, buf: bytearray, pos: int, start: int, head_end: int, size: int) -> None:
        """Count a control frame of ``size`` bytes as a registry sync, a ``module:announced`` or
        other (its type is in its first bytes: the hub writes ``type`` first)."""
        if buf.find(b'"type":"registry:modules:sync"', start, head_end) >= 0:
            self.sync_bytes += size
            self.sync_frames += 1
            if size > self.sync_max:
                self.sync_max = size
        elif buf.find(b'"type":"module:announced"', start, head_end) >= 0:
            self.ann_bytes += size
            self.ann_frames += 1

    def _control(self, buf: bytearray, pos: int, start: int, end: int) -> None:
        self.ctl_bytes += end - pos
        self.ctl_frames += 1
        self._kind(buf, pos, start, min(end, start + 64), end - pos)
        op = buf[pos] & 0x0F
        if op == 8:  # close
            self.close_code = int.from_bytes(buf[start : start + 2], "big") if end - start >= 2 else 1005
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(client_frame(bytes(buf[start : start + 2]), 8))
                self.transport.close()
        elif op == 9:  # ping -> pong
            if self.transport is not None:
                self.transport.write(client_frame(bytes(buf[start:end]), 10))
        elif self.needle is not None and buf.find(self.needle, start, end) >= 0:
            self.needle = None
            self.found_at = time.monotonic()
            if self.found is not None and not self.found.done():
                self.found.set_result(None)

    # -- API ----------------------------------------------------------------------------------------
    def watch(self, needle: bytes) -> asyncio.Future[None]:
        """A future that resolves when a control frame containing ``needle`` arrives."""
        self.needle = needle
        self.found_at = 0.0
        self.found = asyncio.get_running_loop().create_future()
        return self.found

    def write(self, frames: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frames)
        self.tx_bytes += len(frames)

    def send_json(self, obj: Any) -> None:
        self.write(client_frame(dumps(obj)))

    async def writable(self) -> None:
        if self.paused:
            self.resumed = asyncio.get_running_loop().create_future()
            if self.paused:
                await self.resumed

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def parse_url(url: str) -> tuple[str, int, str]:
    u = urlsplit(url)
    if u.scheme != "ws" or not u.hostname:
        raise SystemExit(f"loadgen: only ws:// URLs are supported, got {url}")
    return u.hostname, u.port or 80, u.path or "/"


async def open_ws(st: Stats, url: str, name: str, *, counted: bool = True, rcvbuf: int = 0, timeout: float = 15) -> WSConn:
    host, port, path = parse_url(url)
    loop = asyncio.get_running_loop()

    def factory() -> WSConn:
        return WSConn(st, host, port, path, name, counted)

    if rcvbuf:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
        _, proto = await loop.create_connection(factory, sock=sock)
    else:
        _, proto = await asyncio.wait_for(loop.create_connection(factory, host, port), timeout)
    await asyncio.wait_for(proto.opened, timeout)
    return proto


PING = {"type": "transport:connection:heartbeat", "data": {"kind": "ping", "message": "\U0001fa75"}}


def identity_of(name: str, plugin_id: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"id": name, "kind": "plugin", "plugin": {"id": plugin_id, "labels": labels}}


#: the sender's announced identity: with ``source: true`` a case's messages carry it as
#: ``metadata.source``, so the hub forwards them byte for byte instead of adding it
SENDER = ("bench-send", {"role": "send", "bench": "1"})


def announce(name: str, plugin_id: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"type": "module:announce", "data": {"name": name, "identity": identity_of(name, plugin_id, labels)}}


async def join(conn: WSConn, token: str | None, plugin_id: str, labels: dict[str, str], timeout: float = 30) -> None:
    """Authenticate (when a token is given), announce, and wait until the server answered a
    heartbeat sent right after the announce: the announce has then been processed."""
    if token is not None:
        fut = conn.watch(b"module:authenticated")
        conn.send_json({"type": "module:authenticate", "data": {"token": token}})
        await asyncio.wait_for(fut, timeout)
    fut = conn.watch(b'"kind":"pong"')
    conn.write(client_frame(dumps(announce(conn.name, plugin_id, labels))) + client_frame(dumps(PING)))
    await asyncio.wait_for(fut, timeout)


async def wait_quiet(conns: list[WSConn], quiet: float = 0.3, limit: float = 10.0) -> bool:
    """Wait until no control bytes arrived at ``conns`` for ``quiet`` seconds (at most ``limit``)."""
    t_end = time.monotonic() + limit
    last = -1
    since = time.monotonic()
    while time.monotonic() < t_end:
        cur = sum(c.ctl_bytes for c in conns)
        now = time.monotonic()
        if cur != last:
            last, since = cur, now
        elif now - since >= quiet:
            return True
        await asyncio.sleep(0.05)
    return False


def probe_frame(target: str) -> bytes:
    route = b'{"destinations":["module:%s"]}' % target.encode()
    return client_frame(PREFIX + b"%015d" % now_ns() + MID + b'"},"route":' + route + b"}}")


async def probe_all(sender: WSConn, receivers: list[WSConn], timeout: float = 10) -> bool:
    """Send each receiver a targeted probe until every one has received one."""
    base = {r: r.bench for r in receivers}
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        missing = [r for r in receivers if r.bench == base[r]]
        if not missing:
            return True
        sender.write(b"".join(probe_frame(r.name) for r in missing))
        for _ in range(20):
            await asyncio.sleep(0.025)
            if all(r.bench > base[r] for r in missing):
                break
    return False


def pct(sorted_vals: list[int], q: float) -> float | None:
    if not sorted_vals:
        return None
    return round(sorted_vals[min(len(sorted_vals) - 1, int(q * (len(sorted_vals) - 1) + 0.5))] / 1e6, 3)


class Messages:
    """Pre-built parts of the benchmark messages of one case: ``size`` is the target length of
    the relayed JSON text (the route, when there is one, counts; padding fills the rest)."""

    def __init__(self, size: int, routes: list[bytes] | None, source: bytes | None = None) -> None:
        md = b',"metadata":{"source":' + source + b"}" if source is not None else b""
        self.tails = [b'"}' + md + (b',"route":' + r if r is not None else b"") + b"}}" for r in (routes or [None])]  # type: ignore[list-item]
        longest = max(len(t) for t in self.tails)
        self.pad = b"x" * max(0, size - (PLEN + TW + len(MID) + longest))
        self.sizes = [PLEN + TW + len(MID) + len(self.pad) + len(t) for t in self.tails]
        self.n = len(self.tails)

    def frame(self, t: int, i: int) -> bytes:
        return client_frame(PREFIX + b"%015d" % t + MID + self.pad + self.tails[i])


def policy_route(name: str) -> bytes:
    dest = {
        "type": "and",
        "all": [
            {"type": "or", "any": [f"module:{name}", f"module:{name}-standby"]},
            {"type": "label", "selectors": ["role=recv", "bench"]},
        ],
    }
    return dumps({"destinations": [dest]})


def read_some(fd: int, buf: bytearray | memoryview) -> int:
    """Read what ``fd`` has into ``buf``: the number of bytes, 0 at end of stream or on an
    error, -1 when nothing is there yet."""
    try:
        return os.readv(fd, (buf,))
    except BlockingIOError:
        return -1
    except OSError:
        return 0


class RawWriter:
    """Writes to a connection's socket directly (outside asyncio, whose reading of it is paused
    meanwhile); what the socket cannot take at once waits in ``pending`` for :meth:`flush`."""

    __slots__ = ("conn", "fd", "pending")

    def __init__(self, conn: WSConn) -> None:
        assert conn.transport is not None
        self.conn = conn
        self.fd = conn.transport.get_extra_info("socket").fileno()
        self.pending = b""

    def write(self, data: bytes) -> None:
        self.pending = self.pending + data if self.pending else data
        self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        try:
            n = os.write(self.fd, self.pending)
        except BlockingIOError:
            return
        self.conn.tx_bytes += n
        self.pending = self.pending[n:]


class Pump:
    """The measurement loop of one case, outside asyncio: while it runs, the receivers' sockets
    are read by this loop (their asyncio readers are paused) and the sender's frames are written
    straight to its socket. A plain epoll loop costs the loadgen far less per message than the
    asyncio transport machinery, and ``read_interval`` lets it read each socket at most that
    often, so one read returns several messages (fewer syscalls, at the price of up to
    ``read_interval`` added latency, the same for every server)."""

    def __init__(self, st: Stats, sender: WSConn, receivers: list[WSConn], pid: int | None, t0: float | None = None) -> None:
        self.st, self.sender, self.pid = st, sender, pid
        self.by_fd: dict[int, WSConn] = {}
        self.ep = select.epoll()
        for r in receivers:
            if r.transport is None or r.transport.is_closing():
                continue
            r.transport.pause_reading()
            fd = r.transport.get_extra_info("socket").fileno()
            self.by_fd[fd] = r
            self.ep.register(fd, select.EPOLLIN)
        self.out = RawWriter(sender)
        self.rbuf = bytearray(1 << 18)
        self.mv = memoryview(self.rbuf)
        self.rss: list[tuple[float, int]] = []
        self.delivered: list[tuple[float, int]] = []
        self.next_sample = 0.0
        self.t0 = time.monotonic() if t0 is None else t0

    def close(self) -> None:
        self.ep.close()
        for r in self.by_fd.values():
            if r.transport is not None and not r.transport.is_closing():
                r.transport.resume_reading()

    def read(self, timeout: float) -> int:
        """Read every receiver socket that is ready (waiting at most ``timeout`` s)."""
        events = self.ep.poll(timeout)
        by_fd, rbuf, mv = self.by_fd, self.rbuf, self.mv
        for fd, _ in events:
            n = read_some(fd, rbuf)
            if n < 0:
                continue
            if n == 0:
                self.ep.unregister(fd)
                continue
            by_fd[fd].data_received(mv[:n])
        now = time.monotonic()
        if now >= self.next_sample:
            self.next_sample = now + 0.25
            t = round(now - self.t0, 2)
            self.rss.append((t, proc_rss_kib(self.pid)))
            self.delivered.append((t, self.st.delivered))
        return len(events)


def run_case(
    case: dict[str, Any], st: Stats, sender: WSConn, receivers: list[WSConn], pid: int | None, t0: float | None = None
) -> dict[str, Any]:
    """Run one throughput case (blocking: the asyncio loop does not run meanwhile)."""
    kind = case.get("kind", "fanout")
    mode = case.get("mode", "sat")
    size = int(case.get("size", 64))
    duration = float(case.get("duration", 5))
    warmup = float(case.get("warmup", 0.5))
    counted = [r for r in receivers if r.counted and not r.lost]
    source = dumps(identity_of(sender.name, *SENDER)) if case.get("source") else None
    if kind == "fanout":
        msgs = Messages(size, None, source)
        fanout = len(counted)
    elif kind == "targeted":
        msgs = Messages(size, [b'{"destinations":["module:%s"]}' % r.name.encode() for r in counted], source)
        fanout = 1
    elif kind == "policy":
        msgs = Messages(size, [policy_route(r.name) for r in counted], source)
        fanout = 1
    else:
        raise SystemExit(f"loadgen: unknown case kind {kind!r}")
    default_window = (100 if fanout >= 50 else 500) if kind == "fanout" else 500
    window = int(case.get("window") or min(default_window, max(16, (512 * 1024) // max(size, 1))))
    batch = max(1, min(32, window // 4))
    rate = float(case.get("rate") or 0)
    if mode not in ("sat", "rate"):
        raise SystemExit(f"loadgen: unknown mode {mode!r}")
    if mode == "rate" and rate <= 0:
        raise SystemExit("loadgen: mode 'rate' needs a positive rate")
    interval = float(case.get("read_interval_ms", 2.0 if mode == "sat" else 0.0)) / 1000
    ntargets = msgs.n

    st.reset()
    pump = Pump(st, sender, counted, pid, t0)
    sent = 0
    ti = 0
    t_begin = now_ns()
    t_start = t_begin + int(warmup * 1e9)
    t_stop = t_start + int(duration * 1e9)
    rec: dict[str, float] = {}
    sent_at_start = 0

    def begin() -> None:
        nonlocal sent_at_start
        st.rec_delivered = 0
        st.lat = array("q")
        st.recording = True
        sent_at_start = sent
        for r in counted:
            r.last_at = r.max_gap = 0
        rec["t"] = time.monotonic()
        rec["cpu"] = self_cpu_s()
        rec["srv"] = proc_cpu_s(pid)
        rec["host"] = host_busy_s()

    def build(k: int, t: int) -> bytes:
        nonlocal ti
        parts = []
        for _ in range(k):
            parts.append(msgs.frame(t, ti))
            ti += 1
            if ti == ntargets:
                ti = 0
        return b"".join(parts)

    try:
        next_read = time.monotonic()
        while True:
            t = now_ns()
            if t >= t_stop:
                break
            if not st.recording and t >= t_start:
                begin()
            pump.out.flush()
            if mode == "sat":
                while not pump.out.pending:
                    room = window - (sent - st.delivered // fanout)
                    if room <= 0:
                        break
                    k = min(room, batch)
                    pump.out.write(build(k, now_ns()))
                    sent += k
                can_send = not pump.out.pending and window - (sent - st.delivered // fanout) > 0
                timeout = 0.0 if can_send else 0.005
            else:
                due = int((t - t_begin) * rate / 1e9) - sent
                if due > 0:
                    pump.out.write(build(due, t))
                    sent += due
                timeout = 0.0005
            if interval:
                wait = next_read - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                next_read = time.monotonic() + interval
                timeout = 0.0 if interval else timeout
            if pump.out.pending:
                timeout = min(timeout, 0.0005)
            pump.read(min(timeout, max(0.0, (t_stop - now_ns()) / 1e9)))
        if not st.recording:
            begin()
        st.recording = False
        elapsed = time.monotonic() - rec["t"]
        lg_cpu = self_cpu_s() - rec["cpu"]
        srv_cpu = proc_cpu_s(pid) - rec["srv"]
        host = host_busy_s() - rec["host"]
        sent_in_window = sent - sent_at_start
        delivered = st.rec_delivered
        # drain: whatever is still in flight
        drain_end = time.monotonic() + float(case.get("drain_timeout", 10))
        while (pump.out.pending or st.delivered < sent * fanout) and time.monotonic() < drain_end:
            pump.out.flush()
            pump.read(0.005)
        complete = st.delivered >= sent * fanout
    finally:
        pump.close()
    lat = sorted(st.lat)
    rss = [v for _, v in pump.rss if v]
    return {
        "case": case.get("name") or f"{kind}-{len(counted)}-{size}B-{mode}",
        "kind": kind,
        "mode": mode,
        "receivers": len(counted),
        "fanout": fanout,
        "size": round(sum(msgs.sizes) / len(msgs.sizes)),
        "window": window if mode == "sat" else None,
        "offered_rate": rate if mode == "rate" else None,
        "read_interval_ms": interval * 1000,
        "duration_s": round(elapsed, 3),
        "sent": sent,
        "send_rate": round(sent_in_window / elapsed, 1) if elapsed else None,
        "delivered": delivered,
        "delivered_per_s": round(delivered / elapsed, 1) if elapsed else 0.0,
        "events_per_s": round(delivered / fanout / elapsed, 1) if elapsed and fanout else 0.0,
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "max_ms": round(lat[-1] / 1e6, 3) if lat else None,
        "max_gap_ms": round(max(r.max_gap for r in counted) / 1e6, 3) if counted else None,
        "source": bool(source),
        "latency_samples": len(lat),
        "complete": complete,
        "missing": max(0, sent * fanout - st.delivered),
        "loadgen_cpu_pct": round(100 * lg_cpu / elapsed, 1) if elapsed else None,
        "server_cpu_pct": round(100 * srv_cpu / elapsed, 1) if elapsed and pid else None,
        "other_cpu_pct": others_pct(host, srv_cpu, lg_cpu, elapsed),
        "server_rss_kib": rss[-1] if rss else None,
        "server_rss_max_kib": max(rss) if rss else None,
        "rss_series": pump.rss,
        "delivered_series": pump.delivered,
    }


async def setup_throughput(plan: dict[str, Any], url: str, st: Stats) -> tuple[WSConn, list[WSConn]]:
    token = plan.get("token")
    n = int(plan.get("receivers", 10))
    sem = asyncio.Semaphore(int(plan.get("concurrency", 50)))

    async def recv(i: int) -> WSConn:
        async with sem:
            c = await open_ws(st, url, f"r{i}")
            await join(c, token, "bench-recv", {"role": "recv", "bench": "1"})
            return c

    quiet = float(plan.get("quiet", 0.3))
    log(f"setup: {n} receivers")
    receivers = list(await asyncio.gather(*(recv(i) for i in range(n))))
    sender = await open_ws(st, url, "sender", counted=False)
    await join(sender, token, *SENDER)
    log("setup: all announced")
    await wait_quiet(receivers + [sender], quiet=quiet)
    if not await probe_all(sender, receivers):
        raise SystemExit("loadgen: not every receiver is routable after setup")
    await wait_quiet(receivers + [sender], quiet=quiet)
    log("setup: all routable, control traffic quiet")
    return sender, receivers


def log(msg: str) -> None:
    """Progress on stderr (run.py keeps it in the session's log file)."""
    sys.stderr.write(f"[loadgen {now_ns() / 1e9:7.3f}] {msg}\n")
    sys.stderr.flush()


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def throughput_session(plan: dict[str, Any], url: str, pid: int | None, conns: list[WSConn]) -> None:
    st = Stats()
    sender, receivers = await setup_throughput(plan, url, st)
    conns += receivers + [sender]
    for case in plan["cases"]:
        log(f"case {case.get('name')}")
        res = run_case(case, st, sender, receivers, pid)
        del res["rss_series"], res["delivered_series"]
        emit(res)
        await wait_quiet(receivers + [sender], quiet=float(plan.get("quiet", 0.3)) * 0.7, limit=3)


async def slow_session(plan: dict[str, Any], url: str, pid: int | None, conns: list[WSConn]) -> None:
    st = Stats()
    sender, receivers = await setup_throughput(plan, url, st)
    conns += receivers + [sender]
    t0 = time.monotonic()
    case = {
        "kind": "fanout",
        "mode": "sat",
        "size": int(plan.get("size", 1024)),
        "duration": float(plan.get("duration", 5)),
        "warmup": float(plan.get("warmup", 0.5)),
        "window": plan.get("window"),
    }
    log("slow: phase without the slow receiver")
    without = run_case({**case, "name": "without-slow", "duration": float(plan.get("baseline_duration", case["duration"]))},
                       st, sender, receivers, pid, t0)
    # the slow receiver: a tiny kernel receive buffer, and it stops reading once it has announced
    slow = await open_ws(st, url, "slow", counted=False, rcvbuf=int(plan.get("slow_rcvbuf", 4096)))
    conns.append(slow)
    await join(slow, plan.get("token"), "bench-slow", {"role": "slow"})
    slow.transport.pause_reading()  # type: ignore[union-attr]
    # the hub de-announces a dropped slow consumer with this reason; the floor never drops it
    receivers[0].watch(b'"slow consumer"')
    t_slow = time.monotonic()
    log("slow: phase with the slow receiver")
    with_slow = run_case({**case, "name": "with-slow", "warmup": 0}, st, sender, receivers, pid, t0)
    found_at = receivers[0].found_at
    receivers[0].needle = None
    rss_series = without.pop("rss_series") + with_slow.pop("rss_series")
    delivered = [(t, d) for t, d in without.pop("delivered_series")], [(t, d) for t, d in with_slow.pop("delivered_series")]
    series = []
    for part in delivered:  # the reading receivers' rate per sampling interval, per receiver
        for (ta, da), (tb, db) in zip(part, part[1:]):
            if tb > ta and db >= da:
                series.append((tb, round((db - da) / (tb - ta) / max(1, len(receivers)), 1)))
    rss = [v for _, v in rss_series if v]
    rate_a = without["delivered_per_s"] / max(1, without["receivers"])
    rate_b = with_slow["delivered_per_s"] / max(1, with_slow["receivers"])
    # how long the others were stalled (sampling intervals below half the baseline rate), and
    # their rate once the slow receiver was dropped (hub) / over the phase's second half (floor)
    t_b = t_slow - t0
    after = found_at - t0 if found_at else t_b + (with_slow["duration_s"] / 2)
    phase_b = [(t, r) for t, r in series if t > t_b]
    stall = 0.0
    prev_t = t_b
    for t, r in phase_b:
        if r < rate_a / 2:
            stall += t - prev_t
        prev_t = t
    tail = [r for t, r in phase_b if t > after + 0.3]
    emit(
        {
            "case": "slow-consumer",
            "kind": "slow",
            "receivers": len(receivers),
            "size": without["size"],
            "rate_without": round(rate_a, 1),
            "rate_with": round(rate_b, 1),
            "ratio": round(rate_b / rate_a, 3) if rate_a else None,
            "phase_s": with_slow["duration_s"],
            "stall_s": round(stall, 2),
            "rate_after": round(statistics.median(tail), 1) if tail else None,
            "ratio_after": round(statistics.median(tail) / rate_a, 3) if tail and rate_a else None,
            "delivered_per_s": with_slow["delivered_per_s"],
            "p50_ms": with_slow["p50_ms"],
            "p99_ms": with_slow["p99_ms"],
            "complete": with_slow["complete"],
            "slow_dropped": bool(found_at),
            "slow_dropped_after_s": round(found_at - t_slow, 2) if found_at else None,
            "slow_connected_at_s": round(t_slow - t0, 2),
            "loadgen_cpu_pct": with_slow["loadgen_cpu_pct"],
            "server_cpu_pct": with_slow["server_cpu_pct"],
            "other_cpu_pct": with_slow["other_cpu_pct"],
            "server_rss_start_kib": rss[0] if rss else None,
            "server_rss_kib": rss[-1] if rss else None,
            "server_rss_max_kib": max(rss) if rss else None,
            "rss_series": rss_series,
            "rate_series": series,
            "phases": [without, with_slow],
        }
    )


async def stuck_session(plan: dict[str, Any], url: str, pid: int | None, conns: list[WSConn]) -> None:
    """N receivers at a fixed rate (issue 13: 10 x 1000 msg/s x 4 KiB): first all read, then one
    of them (connected with a tiny SO_RCVBUF) stops reading. The others' p99 latency and longest
    gap between two arrivals in both phases; when the stuck one was de-announced (``slow
    consumer``) after it stopped reading; the server's RSS growth meanwhile."""
    st = Stats()
    n = int(plan.get("receivers", 10))
    sender, receivers = await setup_throughput({**plan, "receivers": n - 1}, url, st)
    stuck = await open_ws(st, url, f"r{n - 1}", rcvbuf=int(plan.get("stuck_rcvbuf", 4096)))
    await join(stuck, plan.get("token"), "bench-recv", {"role": "recv", "bench": "1"})
    await wait_quiet(receivers + [sender, stuck], quiet=float(plan.get("quiet", 0.3)))
    conns += receivers + [sender, stuck]
    t0 = time.monotonic()
    case = {"kind": "fanout", "mode": "rate", "size": int(plan.get("size", 4096)), "rate": float(plan.get("rate", 1000)),
            "warmup": float(plan.get("warmup", 0.3)), "source": bool(plan.get("source"))}
    log("stuck: every receiver reads")
    without = run_case({**case, "name": "without-stuck", "duration": float(plan.get("baseline_duration", 3))},
                       st, sender, receivers + [stuck], pid, t0)
    await wait_quiet(receivers + [sender, stuck], quiet=0.2, limit=3)
    # it stops reading: nothing is taken from its socket any more
    stuck.counted = False
    stuck.transport.pause_reading()  # type: ignore[union-attr]
    receivers[0].watch(b'"slow consumer"')  # the hub de-announces it with this reason
    t_stuck = time.monotonic()
    log("stuck: one receiver stopped reading")
    with_stuck = run_case({**case, "name": "with-stuck", "warmup": 0, "duration": float(plan.get("duration", 5))},
                          st, sender, receivers, pid, t0)
    found_at = receivers[0].found_at
    receivers[0].needle = None
    rss_a = [v for _, v in without.pop("rss_series") if v]
    rss_b = [v for _, v in with_stuck.pop("rss_series") if v]
    without.pop("delivered_series")
    with_stuck.pop("delivered_series")
    start = rss_a[-1] if rss_a else (rss_b[0] if rss_b else 0)

    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    emit({
        "case": "stuck-peer",
        "kind": "stuck",
        "receivers": n,
        "size": without["size"],
        "rate": case["rate"],
        "p50_without_ms": without["p50_ms"],
        "p99_without_ms": without["p99_ms"],
        "max_gap_without_ms": without["max_gap_ms"],
        "p50_with_ms": with_stuck["p50_ms"],
        "p99_with_ms": with_stuck["p99_ms"],
        "max_gap_with_ms": with_stuck["max_gap_ms"],
        "max_latency_with_ms": with_stuck["max_ms"],
        "p99_ratio": ratio(with_stuck["p99_ms"], without["p99_ms"]),
        "gap_ratio": ratio(with_stuck["max_gap_ms"], without["max_gap_ms"]),
        "complete": with_stuck["complete"] and without["complete"],
        "delivered_per_s_without": without["delivered_per_s"],
        "delivered_per_s_with": with_stuck["delivered_per_s"],
        "stuck_dropped": bool(found_at),
        "stuck_dropped_after_s": round(found_at - t_stuck, 3) if found_at else None,
        "server_rss_start_kib": start,
        "server_rss_max_kib": max(rss_b) if rss_b else None,
        "rss_growth_mib": round((max(rss_b) - start) / 1024, 1) if rss_b and start else None,
        "server_cpu_pct": with_stuck["server_cpu_pct"],
        "loadgen_cpu_pct": with_stuck["loadgen_cpu_pct"],
        "other_cpu_pct": with_stuck["other_cpu_pct"],
        "phases": [without, with_stuck],
    })


class _RawTransport:
    """What a :class:`WSConn` needs of a transport, over a plain non-blocking socket that the
    storm's epoll loop reads (writes that the socket cannot take at once wait in ``pending``)."""

    __slots__ = ("sock", "fd", "closed", "pending")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.closed = False
        self.pending = b""

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self.pending += data
        self.flush()

    def flush(self) -> None:
        if not self.pending or self.closed:
            return
        try:
            n = self.sock.send(self.pending)
        except BlockingIOError:
            return
        except OSError:
            self.abort()
            return
        self.pending = self.pending[n:]

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.flush()
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()


#: what a storm client is doing
_CONNECTING, _OPENING, _AUTHENTICATING, _ANNOUNCING, _PROBED, _ROUTABLE, _FAILED = range(7)


class StormPump:
    """The storm outside asyncio (which costs the load generator ~0.3 ms per connection in
    tasks, futures and transports: in a storm it competes with the server for the machine's
    cores). One epoll loop opens the N connections (at most ``concurrency`` in the WebSocket
    opening handshake at once, like the asyncio version), authenticates and announces each,
    and sends its probe through the (paused, here read directly) probe connection once its
    announce was answered. Every client reads and counts all its control traffic throughout."""

    def __init__(self, st: Stats, url: str, n: int, token: str | None, concurrency: int, probe: WSConn, deadline: float) -> None:
        self.host, self.port, self.path = parse_url(url)
        self.st, self.n, self.token, self.concurrency, self.probe, self.deadline = st, n, token, concurrency, probe, deadline
        self.clients: list[WSConn | None] = [None] * n
        self.stage = [_CONNECTING] * n
        self.t_conn = [0] * n
        self.t_auth = [0] * n
        self.t_ann = [0] * n
        self.probed_at = [0] * n
        self.errors: list[str] = []
        self.routable = 0
        self.failed = 0
        self.reprobes = 0
        self.opening = 0  # connections between connect() and the end of their handshake
        self.next = 0
        self.ep = select.epoll()
        self.by_fd: dict[int, int] = {}
        assert probe.transport is not None
        probe.transport.pause_reading()
        self.pfd = probe.transport.get_extra_info("socket").fileno()
        self.ep.register(self.pfd, select.EPOLLIN)
        self.probe_out = RawWriter(probe)

    def close(self) -> None:
        self.ep.close()
        t = self.probe.transport
        if t is not None and not t.is_closing():
            t.resume_reading()

    # -- clients -----------------------------------------------------------------------------------
    def _open(self, i: int, t0: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex((self.host, self.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.stage[i] = _FAILED
            self.failed += 1
            self.errors.append(f"s{i}: connect: {os.strerror(err)}")
            return
        c = WSConn(self.st, self.host, self.port, self.path, f"s{i}", False)
        c.transport = _RawTransport(sock)  # type: ignore[assignment]
        self.clients[i] = c
        self.by_fd[sock.fileno()] = i
        self.ep.register(sock.fileno(), select.EPOLLOUT | select.EPOLLIN)
        self.opening += 1

    def _fail(self, i: int, why: str) -> None:
        if self.stage[i] <= _OPENING:
            self.opening -= 1
        self.stage[i] = _FAILED
        self.failed += 1
        self.errors.append(f"s{i}: {why}")
        c = self.clients[i]
        if c is not None and c.transport is not None:
            t: _RawTransport = c.transport  # type: ignore[assignment]
            if self.by_fd.get(t.fd) == i:
                del self.by_fd[t.fd]
                if not t.closed:
                    self.ep.unregister(t.fd)
            t.abort()

    def _advance(self, i: int, c: WSConn, t0: int) -> None:
        """Move client ``i`` on as far as what it has received allows."""
        stage = self.stage[i]
        if stage == _OPENING and c.hs is None:
            if c.opened.done() and c.opened.exception() is not None:
                self._fail(i, str(c.opened.exception()))
                return
            self.opening -= 1
            self.t_conn[i] = now_ns() - t0
            if self.token is not None:
                c.needle, c.found_at = b"module:authenticated", 0.0
                c.send_json({"type": "module:authenticate", "data": {"token": self.token}})
                stage = _AUTHENTICATING
            else:
                stage = _ANNOUNCING
                c.needle, c.found_at = b'"kind":"pong"', 0.0
                c.write(client_frame(dumps(announce(c.name, "bench-storm", {"role": "storm"}))) + client_frame(dumps(PING)))
        if stage == _AUTHENTICATING and c.found_at:
            self.t_auth[i] = now_ns() - t0
            stage = _ANNOUNCING
            c.needle, c.found_at = b'"kind":"pong"', 0.0
            c.write(client_frame(dumps(announce(c.name, "bench-storm", {"role": "storm"}))) + client_frame(dumps(PING)))
        if stage == _ANNOUNCING and c.found_at:
            self.t_ann[i] = now_ns() - t0
            stage = _PROBED
            self.probed_at[i] = now_ns()
            self.probe_out.write(probe_frame(c.name))
        if stage == _PROBED and c.first_bench:
            stage = _ROUTABLE
            self.routable += 1
        self.stage[i] = stage

    def _read(self, timeout: float, t0: int) -> int:
        """One epoll round: connections that completed, bytes that arrived. Returns the
        number of bytes read."""
        got = 0
        mv = _SCRATCH
        for fd, ev in self.ep.poll(timeout):
            if fd == self.pfd:
                k = read_some(fd, mv)
                if k < 0:
                    continue
                if k == 0:
                    self.ep.unregister(fd)
                    self.errors.append("probe: connection lost")
                    continue
                got += k
                self.probe.data_received(mv[:k])
                continue
            i = self.by_fd.get(fd)
            if i is None:
                continue
            c = self.clients[i]
            assert c is not None
            t: _RawTransport = c.transport  # type: ignore[assignment]
            if self.stage[i] == _CONNECTING:
                if not ev & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                    continue
                err = t.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.stage[i] = _OPENING
                    self._fail(i, f"connect: {os.strerror(err)}")
                    continue
                self.stage[i] = _OPENING
                self.ep.modify(fd, select.EPOLLIN)
                c.connection_made(t)  # type: ignore[arg-type]  # sends the opening handshake
                continue
            if t.pending:
                t.flush()
            k = read_some(fd, mv)
            if k < 0:
                continue
            if k == 0:
                self.by_fd.pop(fd, None)
                self.ep.unregister(fd)
                c.lost = True
                if self.stage[i] < _ROUTABLE:
                    self._fail(i, "connection lost")
                continue
            got += k
            c.data_received(mv[:k])
            if self.stage[i] < _ROUTABLE:
                self._advance(i, c, t0)
        return got

    def run(self, t0: int) -> None:
        """Until every client is routable (or the deadline): returns at once when it is."""
        n = self.n
        next_reprobe = time.monotonic() + 0.1
        while time.monotonic() < self.deadline:
            while self.next < n and self.opening < self.concurrency:
                self._open(self.next, t0)
                self.next += 1
            self.probe_out.flush()
            self._read(0.01, t0)
            if self.next >= n and self.routable + self.failed >= n:
                break
            now = time.monotonic()
            if now >= next_reprobe:  # stragglers get their probe again every 0.5 s
                next_reprobe = now + 0.1
                ns = now_ns()
                stale = [i for i in range(self.next) if self.stage[i] == _PROBED and ns - self.probed_at[i] > 500_000_000]
                if stale:
                    self.reprobes += len(stale)
                    self.probe_out.write(b"".join(probe_frame(f"s{i}") for i in stale))
                    for i in stale:
                        self.probed_at[i] = ns

    def settle(self, quiet: float, limit: float) -> bool:
        """Keep reading until nothing arrived for ``quiet`` s (at most ``limit`` s)."""
        t_end = time.monotonic() + limit
        since = time.monotonic()
        while time.monotonic() < t_end:
            if self._read(0.02, 0):
                since = time.monotonic()
            elif time.monotonic() - since >= quiet:
                return True
        return False


async def storm_session(plan: dict[str, Any], url: str, pid: int | None, conns: list[WSConn]) -> None:
    n = int(plan.get("clients", 1000))
    token = plan.get("token")
    limit = float(plan.get("timeout", 60))
    st = Stats()
    probe = await open_ws(st, url, "probe", counted=False)
    conns.append(probe)
    await join(probe, token, "bench-probe", {"role": "probe"})
    quiet = float(plan.get("quiet", 0.3))
    await wait_quiet([probe], quiet=quiet)
    await asyncio.sleep(quiet)
    log(f"storm: {n} clients")
    rss_before = proc_rss_kib(pid)
    cpu_before = proc_cpu_s(pid)
    lg_cpu0 = self_cpu_s()
    host0 = host_busy_s()
    t0 = now_ns()
    pump = StormPump(st, url, n, token, int(plan.get("concurrency", 1000)), probe, time.monotonic() + limit)
    try:
        pump.run(t0)
        clients = pump.clients
        conns.extend(c for c in clients if c is not None)
        t_conn, t_auth, t_ann = pump.t_conn, pump.t_auth, pump.t_ann
        errors = pump.errors[:]
        missing = n - pump.routable
        if missing and not errors:
            errors.insert(0, f"{missing} clients not routable within {limit:g} s")
        live = [c for c in clients if c is not None]
        routable = [c for c in live if c.first_bench]
        t_routable = (max(c.first_bench for c in routable) - t0) / 1e9 if len(routable) == n else None
        reprobes = pump.reprobes
        ctl_at_routable = sum(c.ctl_bytes for c in live)
        cpu_at_routable = proc_cpu_s(pid) - cpu_before
        lg_cpu = self_cpu_s() - lg_cpu0
        storm_wall = (now_ns() - t0) / 1e9
        other = others_pct(host_busy_s() - host0, cpu_at_routable, lg_cpu, storm_wall)
        log("storm: all routable" if t_routable is not None else "storm: NOT all routable")
        # wait for the control traffic to end (the hub's coalesced registry syncs) before reading
        # the server's RSS; after a storm that timed out, only briefly
        settle_limit = float(plan.get("settle_limit", 20)) if t_routable is not None else 1.0
        settled = pump.settle(float(plan.get("settle_quiet", 0.5)), settle_limit)
    finally:
        pump.close()
    await asyncio.sleep(quiet)
    log("storm: settled")
    rss_after = proc_rss_kib(pid)
    ctl = sum(c.ctl_bytes for c in live)
    frames = sum(c.ctl_frames for c in live)
    # the protocol's minimum per client: one module:announced for every other module (the
    # probe's included) and one full registry listing (the largest sync any client got)
    ann_frames = sum(c.ann_frames for c in live)
    ann_size = sum(c.ann_bytes for c in live) / ann_frames if ann_frames else 0.0
    listing = max((c.sync_max for c in live + [probe]), default=0)
    minimum = n * ann_size + listing  # n - 1 other storm clients + the probe
    emit(
        {
            "case": f"storm-{n}",
            "kind": "storm",
            "clients": n,
            "token": token is not None,
            "connected": len(live),
            "routable": len(routable),
            "errors": errors[:5],
            "error_count": len(errors),
            "timeout_s": limit,
            "t_connected_s": round(max(t_conn) / 1e9, 3) if all(t_conn) else None,
            "t_authenticated_s": round(max(t_auth) / 1e9, 3) if token is not None and all(t_auth) else None,
            "t_announced_s": round(max(t_ann) / 1e9, 3) if all(t_ann) else None,
            "t_routable_s": round(t_routable, 3) if t_routable is not None else None,
            "reprobes": reprobes,
            "ctl_bytes": ctl,
            "ctl_bytes_per_client": round(ctl / max(1, len(live))),
            "ctl_frames_per_client": round(frames / max(1, len(live)), 1),
            "announced_bytes_per_client": round(sum(c.ann_bytes for c in live) / max(1, len(live))),
            "sync_bytes_per_client": round(sum(c.sync_bytes for c in live) / max(1, len(live))),
            "syncs_per_client": round(sum(c.sync_frames for c in live) / max(1, len(live)), 2),
            "announced_frame_bytes": round(ann_size, 1),
            "listing_bytes": listing,
            "ctl_min_per_client": round(minimum),
            "ctl_vs_min": round(ctl / max(1, len(live)) / minimum, 3) if minimum else None,
            "ctl_bytes_at_routable": ctl_at_routable,
            "probe_ctl_bytes": probe.ctl_bytes,
            "http_bytes_per_client": round(sum(c.http_bytes for c in live) / max(1, len(live))),
            "tx_bytes_per_client": round(sum(c.tx_bytes for c in live) / max(1, len(live))),
            "settled": settled,
            "server_cpu_s_to_routable": round(cpu_at_routable, 3),
            "loadgen_cpu_s": round(lg_cpu, 3),
            "other_cpu_pct": other,
            "server_rss_before_kib": rss_before,
            "server_rss_kib": rss_after,
            "rss_per_conn_kib": round((rss_after - rss_before) / max(1, len(live)), 2) if pid else None,
        }
    )


async def run(plan: dict[str, Any], url: str, pid: int | None) -> None:
    conns: list[WSConn] = []
    session = plan.get("session", "throughput")
    fn = {"throughput": throughput_session, "slow": slow_session, "stuck": stuck_session, "storm": storm_session}.get(session)
    if fn is None:
        raise SystemExit(f"loadgen: unknown session {session!r}")
    try:
        await asyncio.wait_for(fn(plan, url, pid, conns), float(plan.get("session_timeout", 600)))
    finally:
        for c in conns:
            c.abort()
        await asyncio.sleep(0)


def plan_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.plan:
        text = args.plan
        if text.startswith("@"):
            with open(text[1:]) as fh:
                text = fh.read()
        return json.loads(text)
    if args.scenario == "storm":
        return {"session": "storm", "clients": args.clients, "token": args.token}
    if args.scenario == "slow":
        return {"session": "slow", "receivers": args.receivers, "size": args.size, "duration": args.duration, "token": args.token}
    case = {"kind": args.scenario, "mode": args.mode, "size": args.size, "duration": args.duration, "warmup": args.warmup,
            "rate": args.rate, "window": args.window}
    return {"session": "throughput", "receivers": args.receivers, "token": args.token, "cases": [case]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="AIRI hub benchmark load generator (prints JSON lines)")
    ap.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/ws")
    ap.add_argument("--server-pid", type=int, help="server process id, for its CPU and RSS")
    ap.add_argument("--plan", help="a JSON session plan (or @file); overrides the flags below")
    ap.add_argument("--scenario", default="fanout", choices=["fanout", "targeted", "policy", "storm", "slow"])
    ap.add_argument("--receivers", type=int, default=10)
    ap.add_argument("--size", type=int, default=64, help="relayed JSON text length in bytes")
    ap.add_argument("--mode", default="sat", choices=["sat", "rate"])
    ap.add_argument("--rate", type=float, default=0, help="messages/s in --mode rate")
    ap.add_argument("--window", type=int, default=0, help="max messages in flight in --mode sat (0 = default)")
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--token")
    args = ap.parse_args(argv)
    asyncio.run(run(plan_from_args(args), args.url, args.server_pid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
