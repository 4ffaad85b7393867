"""A userspace WAN link emulator: one asyncio TCP proxy per link.

Where the kernel has ``tc netem``, links are best shaped there (network
namespaces + veth + netem). Without it, :class:`LinkProxy` does what
toxiproxy does: it accepts connections on a local port, opens one to the
target for each, and forwards the bytes of both directions through a shaped
pipe. A chunk read at time ``t_r`` on a link with one-way latency ``L`` and
rate ``R`` (bit/s) is written at

.. math::

    t_w = t_{tx} + L, \\qquad t_{tx} = \\max(t_{tx}^{prev}, t_r) + 8\\,|chunk| / R,

i.e. a FIFO transmitter serialises the bytes at ``R`` (the link is busy
until ``t_tx``) and propagation adds ``L``; chunks are delivered in order,
and pipelining is preserved (a burst costs ``L + size/R``, not ``L`` per
chunk). Each direction of each connection has its own transmitter (the
model's per-arc bandwidth); at most ``max_buffer`` bytes wait in a pipe
before reading pauses (backpressure).

:func:`star_links` turns fedsim's delay model into per-silo link shapes for
a STAR deployment: the SuperLink sits at the STAR server silo and silo
``i``'s SuperNode reaches it over the schedule's arc ``server -> i`` (path
latency) with the arc's available rate (the smallest of the shared access
capacities and the core bandwidth, as in :func:`fedsim.topologies.delay.arc_delays`).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinkShape:
    """One-way latency (ms) and rate (bit/s) of both directions of a link."""

    latency_ms: float
    rate_bps: float = float("inf")

    @property
    def s_per_byte(self) -> float:
        """Serialisation time of one byte (s); 0 on an unlimited link."""
        return 8.0 / self.rate_bps if np.isfinite(self.rate_bps) else 0.0

    def transfer_ms(self, nbytes: int) -> float:
        """Time for ``nbytes`` to cross the link: ``L + 8 n / R`` (ms)."""
        return self.latency_ms + 1e3 * nbytes * self.s_per_byte


class _Pipe:
    """One shaped direction of one connection."""

    def __init__(self, shape: LinkShape, max_buffer: int, trace: list | None = None, tag: tuple = ()) -> None:
        self.shape = shape
        self.s_per_byte, self.latency_s = shape.s_per_byte, shape.latency_ms / 1e3  # per chunk below
        self.trace = trace  # (loop time, *tag, bytes) of every read, when tracing
        self.tag = tag
        self.tx_free = 0.0  # loop time at which the transmitter is idle again
        self.queue: asyncio.Queue = asyncio.Queue()
        self.buffered = 0
        self.max_buffer = max_buffer
        self.room = asyncio.Event()
        self.room.set()
        self.bytes = 0

    async def reader(self, src: asyncio.StreamReader, loop) -> None:
        try:
            while True:
                data = await src.read(65536)
                now = loop.time()
                if not data:
                    break
                if self.trace is not None:
                    self.trace.append((now, *self.tag, len(data)))
                self.tx_free = max(self.tx_free, now) + len(data) * self.s_per_byte
                self.buffered += len(data)
                if self.buffered >= self.max_buffer:
                    self.room.clear()
                await self.queue.put((self.tx_free + self.latency_s, data))
                await self.room.wait()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            await self.queue.put((None, b""))

    async def writer(self, dst: asyncio.StreamWriter, loop) -> None:
        try:
            while True:
                due, data = await self.queue.get()
                if due is None:
                    break
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                dst.write(data)
                self.bytes += len(data)
                self.buffered -= len(data)
                if self.buffered < self.max_buffer:
                    self.room.set()
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            try:
                if dst.can_write_eof():
                    dst.write_eof()
            except (OSError, RuntimeError):
                pass


class LinkProxy:
    """A shaped TCP proxy ``listen -> target`` (see the module docstring)."""

    def __init__(self, target: tuple[str, int], shape: LinkShape, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, max_buffer: int = 4 << 20, trace: bool = False) -> None:
        self.target = target
        self.shape = shape
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.max_buffer = max_buffer
        self.connections = 0
        self.bytes_up = 0  # client -> target
        self.bytes_down = 0
        self._server: asyncio.base_events.Server | None = None
        self.trace: list | None = [] if trace else None

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self.listen_host, self.listen_port

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        self.connections += 1
        try:
            t_reader, t_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.close()
            return
        conn = self.connections
        up = _Pipe(self.shape, self.max_buffer, self.trace, (conn, "up"))
        down = _Pipe(self.shape, self.max_buffer, self.trace, (conn, "down"))
        tasks = [loop.create_task(up.reader(c_reader, loop)), loop.create_task(up.writer(t_writer, loop)),
                 loop.create_task(down.reader(t_reader, loop)), loop.create_task(down.writer(c_writer, loop))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.bytes_up += up.bytes
            self.bytes_down += down.bytes
            for w in (c_writer, t_writer):
                try:
                    w.close()
                except RuntimeError:  # the loop is already shutting down
                    pass

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Emulator:
    """Several :class:`LinkProxy` on one event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="wanemu", daemon=True)
        self.thread.start()
        self.proxies: dict[object, LinkProxy] = {}

    def add(self, key, target: tuple[str, int], shape: LinkShape, trace: bool = False) -> tuple[str, int]:
        """Start a proxy to ``target``; returns the address to dial instead.

        With ``trace``, the proxy records ``(monotonic time, connection, direction, bytes)``
        for every chunk it reads (``proxies[key].trace``).
        """
        proxy = LinkProxy(target, shape, trace=trace)
        addr = asyncio.run_coroutine_threadsafe(proxy.start(), self.loop).result(timeout=10)
        self.proxies[key] = proxy
        return addr

    def stats(self) -> dict:
        return {str(k): {"latency_ms": p.shape.latency_ms, "rate_bps": p.shape.rate_bps,
                         "connections": p.connections, "bytes_up": p.bytes_up, "bytes_down": p.bytes_down}
                for k, p in self.proxies.items()}

    def close(self) -> None:
        async def _stop():
            for p in self.proxies.values():
                await p.stop()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        if self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(timeout=10)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def star_links(conn, profile, schedule) -> tuple[int, dict[int, LinkShape]]:
    """The STAR server silo and the shape of each other silo's link to it.

    Rate of silo ``i``'s link: ``min(C_up / outdeg, C_dn / indeg, A(server, i))``
    with the STAR degrees (the server sends to and receives from ``N - 1``
    silos), so that ``M / rate`` is the transfer term of the arc delay.
    Latency: the arc's (path) latency.
    """
    from fedsim.topologies.delay import degrees

    if schedule.server is None:
        raise ValueError("star_links needs a STAR schedule")
    arcs = schedule.arcs
    lat = schedule.latency_ms if schedule.latency_ms is not None else conn.latency(profile)[arcs[:, 0], arcs[:, 1]]
    bw = schedule.bandwidth_bps if schedule.bandwidth_bps is not None else \
        conn.bandwidth(profile)[arcs[:, 0], arcs[:, 1]]
    outdeg, indeg = degrees(conn.n, arcs)
    shapes: dict[int, LinkShape] = {}
    for a, (u, v) in enumerate(arcs.tolist()):
        if u != schedule.server:
            continue
        rate = min(profile.upload_bps / outdeg[u], profile.download_bps / indeg[v], float(bw[a]))
        shapes[v] = LinkShape(float(lat[a]), float(rate))
    return int(schedule.server), shapes


def netem_available() -> tuple[bool, str]:
    """Whether ``tc netem`` works here, tried in a throw-away network namespace.

    Returns ``(available, detail)``; nothing outside the namespace is touched.
    """
    import shutil
    import subprocess

    if not (shutil.which("unshare") and shutil.which("tc") and shutil.which("ip")):
        return False, "unshare, ip or tc not found"
    script = "ip link set lo up && tc qdisc add dev lo root netem delay 1ms"
    try:
        res = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    detail = (res.stdout + res.stderr).strip() or "ok"
    return res.returncode == 0, detail
