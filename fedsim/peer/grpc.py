"""The peer data plane over gRPC with mutual TLS: one identity per silo.

Each silo runs a :class:`GrpcTransport`: a gRPC server (``fedsim.peer.Peer``
of ``peer.proto``) on its peer port, and one channel per out-neighbour. A
model is streamed as 1 MiB chunks; the first carries the header (run key,
round, sender, receiver, kind, size).

Identity: every silo holds a certificate from the deployment's CA whose
subject alternative names carry ``silo-<index>.fedsim`` and the silo's name
(:func:`fedsim.deploy.certs.generate_silo_certificates`). Both ends
authenticate:

* a sender dials ``silo-<dst>.fedsim`` (the channel's TLS target name), so it
  only talks to the holder of the receiver's key;
* a receiver accepts a stream only if the client certificate names the silo
  the header claims as sender, the header names this silo and this run, and
  the plan has an arc from that sender to this silo in that round.

Without TLS (``tls=None``, a laptop's ``--insecure``) nothing is
authenticated; the CLI warns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from fedsim.errors import FedsimError
from fedsim.peer import peer_pb2
from fedsim.peer.identity import silo_dns
from fedsim.peer.transport import Mailbox, Transport

CHUNK_BYTES = 1 << 20
SERVICE = "fedsim.peer.Peer"
METHOD = f"/{SERVICE}/Send"
_OPTIONS = [("grpc.max_receive_message_length", 4 * CHUNK_BYTES), ("grpc.max_send_message_length", 4 * CHUNK_BYTES)]
# A receiver's peer server comes up when its ClientApp starts, possibly after the sender's first send:
# retry the connection every 50-500 ms, not with gRPC's default backoff (1 s, growing to 2 min).
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
                    ("grpc.max_reconnect_backoff_ms", 500)]


@dataclass(frozen=True)
class PeerTLS:
    """A silo's TLS material: its certificate and key, and the deployment's CA."""

    cert: bytes
    key: bytes
    ca: bytes

    @classmethod
    def from_files(cls, cert, key, ca) -> PeerTLS:
        try:
            return cls(Path(cert).read_bytes(), Path(key).read_bytes(), Path(ca).read_bytes())
        except OSError as exc:
            raise FedsimError(f"cannot read the peer TLS files: {exc}") from None


def _chunks(header: dict, array: np.ndarray):
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    yield peer_pb2.Chunk(size=array.size, data=data[:CHUNK_BYTES], **header)
    for off in range(CHUNK_BYTES, len(data), CHUNK_BYTES):
        yield peer_pb2.Chunk(data=data[off:off + CHUNK_BYTES])


class GrpcTransport(Transport):
    """One silo's peer server and its channels to its out-neighbours.

    Parameters
    ----------
    silo : int
    run : str
        The run key; streams of another run are refused.
    size : int
        Values in a model (arrivals of another size are refused).
    listen : str
        ``HOST:PORT`` the peer server binds (``0.0.0.0:PORT`` to accept from other machines).
    directory : dict
        ``dst -> HOST:PORT`` where this silo reaches each out-neighbour.
    tls : PeerTLS or None
        ``None``: no TLS and no authentication.
    allowed : callable
        ``allowed(src, round, kind)``: whether the plan has that arrival for this silo.
    send_timeout : float
        Seconds a send may take, waiting for the receiver's server to be up included.
    bind_timeout : float
        Seconds to keep trying to bind ``listen`` while another process holds it.
    """

    def __init__(self, silo: int, run: str, size: int, listen: str, directory: dict[int, str],
                 tls: PeerTLS | None, allowed: Callable[[int, int, str], bool], send_timeout: float = 60.0,
                 bind_timeout: float = 0.0) -> None:
        self.silo, self.run, self.size = int(silo), str(run), int(size)
        self.directory = {int(k): str(v) for k, v in directory.items()}
        self.tls, self.allowed, self.send_timeout = tls, allowed, float(send_timeout)
        self.mailbox = Mailbox(size)
        self.bytes_sent = self.bytes_received = 0
        self.refusals: list[str] = []
        self._lock = threading.Lock()
        self._channels: dict[int, grpc.Channel] = {}
        self._pending: list[tuple[int, futures.Future]] = []
        self._pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"peer{silo}-send")
        handler = grpc.stream_unary_rpc_method_handler(self._serve, request_deserializer=peer_pb2.Chunk.FromString,
                                                       response_serializer=peer_pb2.Ack.SerializeToString)
        # A silo's previous ClientApp (a stopped run's last segment) may still hold the port for up to a
        # peer timeout: wait for it rather than share the port with it (no SO_REUSEPORT).
        deadline = time.monotonic() + bind_timeout
        while True:
            self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"peer{silo}-recv"),
                                      options=_OPTIONS + [("grpc.so_reuseport", 0)])
            self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Send": handler}),))
            try:
                if tls is None:
                    port = self.server.add_insecure_port(listen)
                else:
                    creds = grpc.ssl_server_credentials([(tls.key, tls.cert)], root_certificates=tls.ca,
                                                        require_client_auth=True)
                    port = self.server.add_secure_port(listen, creds)
            except RuntimeError:
                port = 0
            if port or time.monotonic() > deadline:
                break
            self.server.stop(None)
            time.sleep(0.2)
        if port == 0:
            raise FedsimError(f"silo {silo}: cannot listen for peers on {listen} (port in use?)")
        self.port = port
        self.server.start()

    # -- receiving -------------------------------------------------------------
    def _refuse(self, context, code, reason: str):
        self.refusals.append(reason)
        context.abort(code, reason)

    def _serve(self, chunks, context) -> peer_pb2.Ack:
        first = next(chunks, None)
        if first is None:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "empty stream")
        src, rnd, kind = int(first.src), int(first.round), first.kind
        if self.tls is not None:
            names = {n.decode() for n in (context.peer_identities() or [])}
            if silo_dns(src) not in names:
                self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                             f"a peer whose certificate names {sorted(names)} claims to be silo {src}")
        if first.run != self.run or int(first.dst) != self.silo:
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"stream for run {first.run!r} silo {first.dst}; this is run {self.run!r} silo {self.silo}")
        if kind not in ("fresh", "stale") or not self.allowed(src, rnd, kind):
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"silo {src} has no {kind} arc to silo {self.silo} in round {rnd}")
        expected = int(first.size) * 4
        if int(first.size) != self.size:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"model of {first.size} values from silo {src}, expected {self.size}")
        parts, got = [first.data], len(first.data)
        for c in chunks:
            got += len(c.data)
            if got > expected:
                self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"silo {src} sent more than {expected} bytes")
            parts.append(c.data)
        if got != expected:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"silo {src} sent {got} of {expected} bytes")
        array = np.frombuffer(b"".join(parts), dtype="<f4").astype(np.float32)
        with self._lock:
            self.bytes_received += got
        reason = self.mailbox.put(src, rnd, kind, array)
        return peer_pb2.Ack(ok=reason is None, reason=reason or "")

    def receive(self, wanted, rnd, timeout):
        return self.mailbox.take(wanted, rnd, timeout)

    # -- sending ---------------------------------------------------------------
    def _channel(self, dst: int) -> grpc.Channel:
        if dst not in self._channels:
            if dst not in self.directory:
                raise FedsimError(f"silo {self.silo} has no address for silo {dst}")
            addr = self.directory[dst]
            if self.tls is None:
                self._channels[dst] = grpc.insecure_channel(addr, options=_OPTIONS + _CHANNEL_OPTIONS)
            else:
                creds = grpc.ssl_channel_credentials(root_certificates=self.tls.ca, private_key=self.tls.key,
                                                     certificate_chain=self.tls.cert)
                self._channels[dst] = grpc.secure_channel(
                    addr, creds, options=_OPTIONS + _CHANNEL_OPTIONS + [("grpc.ssl_target_name_override", silo_dns(dst))])
        return self._channels[dst]

    def _send(self, dst: int, header: dict, array: np.ndarray) -> str | None:
        call = self._channel(dst).stream_unary(METHOD, request_serializer=peer_pb2.Chunk.SerializeToString,
                                               response_deserializer=peer_pb2.Ack.FromString)
        try:
            ack = call(_chunks(header, array), timeout=self.send_timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        with self._lock:
            self.bytes_sent += array.nbytes
        return None if ack.ok else f"refused: {ack.reason}"

    def send(self, dst, rnd, kind, array):
        header = {"run": self.run, "round": int(rnd), "src": self.silo, "dst": int(dst), "kind": kind}
        self._pending.append((int(dst), self._pool.submit(self._send, int(dst), header, np.array(array, copy=True))))

    def flush(self, timeout):
        failed = {}
        for dst, fut in self._pending:
            try:
                why = fut.result(timeout=timeout)
            except futures.TimeoutError:
                why = f"not delivered within {timeout:g} s"
            if why:
                failed.setdefault(dst, why)
        self._pending = []
        return failed

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for ch in self._channels.values():
            ch.close()
        self.server.stop(grace=1.0).wait(2.0)
