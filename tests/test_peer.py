"""The peer data plane without Flower: mixing plan, silo loop, in-process and gRPC transports.

* The per-silo plan against the mixing matrices and against hand-derived
  rounds of a 3-silo multigraph (isolated silos, stale arrivals).
* Silo loops running as threads over the in-process transport end with the
  very models (bit for bit) of the Simulation Engine's strategy, which mixes
  in the server process: both call the same plan and ``mix_row``.
* A silo that stops sending: its out-neighbour waits ``peer_timeout``, then
  mixes without it (renormalised) and records the loss.
* gRPC with mutual TLS: the same loops over real sockets give the same
  models; a peer holding silo 1's key that claims to be silo 0 is refused, as
  are a stream for another run, an arrival the plan does not have, NaN
  arrays, and a client without a certificate.
"""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from fedsim.clients import get_task
from fedsim.errors import FedsimError
from fedsim.peer.loop import SiloLoop
from fedsim.peer.silo import Silo
from fedsim.peer.transport import InProcNetwork, InProcTransport
from fedsim.strategies.mixing import MixingPlan, SiloRound, mix_row
from fedsim.topologies import build_schedule, connectivity, get_profile
from fedsim.topologies.networks import load_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tri(tri_network):
    net = load_network(tri_network)
    return net, connectivity(net)


def _plan(tri, strategy: str, rounds: int = 6) -> MixingPlan:
    _, conn = tri
    return MixingPlan(build_schedule(strategy, conn, get_profile("femnist")), rounds, seed=3)


# ----------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("strategy", ["ring", "mst", "matcha", "multigraph"])
def test_silo_rows_are_the_mixing_matrix(tri, strategy):
    plan = _plan(tri, strategy)
    for k in range(1, 7):
        w, stale = plan.matrix(k)
        rows = [plan.silo_round(i, k) for i in range(3)]
        for i, row in enumerate(rows):
            got = np.zeros(3)
            got[i] = row.self_weight
            for j, wij, st in row.inbound:
                got[j] += wij
                assert st == bool(stale is not None and stale[i, j])
                # the sender sends exactly what the receiver waits for
                assert i in (rows[j].stale_to if st else rows[j].fresh_to)
            np.testing.assert_allclose(got, w[i], atol=1e-12)
        sends = sum(len(r.fresh_to) + len(r.stale_to) for r in rows)
        assert sends == sum(len(r.inbound) for r in rows)


def test_multigraph_rounds_hand_derived(tri):
    # On the 3-silo network the multigraph keeps the ring 0->2->1->0 with multiplicities
    # (4, 4, 1): arc 1->0 is strong every round, the two others every 4th round (state 0).
    plan = _plan(tri, "multigraph")
    assert plan.schedule.arcs.tolist() == [[0, 2], [2, 1], [1, 0]]
    assert plan.schedule.multiplicity.tolist() == [4, 4, 1]
    # round 1 (state 0): every arc strong, self weight 0.7
    assert plan.silo_round(2, 1) == SiloRound(0.7, ((0, pytest.approx(0.3), False),), (1,), ())
    # round 2 (state 1): silos 1 and 2 are isolated: weight 1 on themselves, nothing to wait for
    assert plan.silo_round(1, 2) == SiloRound(1.0, (), (0,), ())
    assert plan.silo_round(2, 2) == SiloRound(1.0, (), (), ())
    # round 5 (state 4): the arcs weak in round 4 carry the model the sender started round 5 with
    assert plan.silo_round(0, 5).stale_to == (2,)
    assert plan.silo_round(2, 5).inbound == ((0, pytest.approx(0.3), True),)
    assert plan.silo_round(1, 5).inbound == ((2, pytest.approx(0.3), True),)


def test_mix_row_renormalises_over_what_arrived():
    row = SiloRound(0.5, ((0, 0.3, False), (2, 0.2, True)), (), ())
    own, a0, a2 = (np.full(2, v, np.float32) for v in (1.0, 2.0, 4.0))
    np.testing.assert_array_equal(mix_row(row, own, {0: a0, 2: a2}), np.full(2, 0.5 + 0.6 + 0.8, np.float32))
    # silo 2 lost: weights 0.5 and 0.3 renormalised to 5/8 and 3/8
    np.testing.assert_allclose(mix_row(row, own, {0: a0}), np.full(2, 5 / 8 + 6 / 8), rtol=1e-6)
    # negative surviving weights (FDLA) that sum to ~0: the silo keeps its own model
    neg = SiloRound(-0.3, ((0, 0.3, False), (1, 1.0, False)), (), ())
    np.testing.assert_array_equal(mix_row(neg, own, {0: a0}), own)


# ----------------------------------------------------------------------------- the silo loop
def _run_threads(silos, plan, transports, rounds, timeout=30.0):
    loops = [SiloLoop(s, (lambda k, i=i: plan.silo_round(i, k)), transports[i], 1, peer_timeout=timeout)
             for i, s in enumerate(silos)]
    out: dict[int, list] = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, loops[i].run(1, rounds))) for i in range(len(silos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return loops, out


def _server_side(tri, plan, rounds):
    """What the Simulation Engine's strategy computes: train every silo, then mix in one process."""
    from fedsim.strategies import Decentralized

    n = 3
    task = get_task("digits", {"lr": 0.3})
    silos = [Silo(i, n, 3, task) for i in range(n)]
    strategy = Decentralized(n, silos[0].get_flat(), {i: i for i in range(n)}, schedule=plan.schedule,
                             rounds=rounds, seed=3, plan=plan)
    for k in range(1, rounds + 1):
        trained = np.empty_like(strategy.models)
        for i, s in enumerate(silos):
            s.set_flat(strategy.models[i])
            s.local_round(k, 1)
            trained[i] = s.get_flat()
        strategy.models = strategy.mix_models(k, trained, np.ones(n, bool), strategy.n_examples)[0]
    return strategy.models


@pytest.mark.parametrize("strategy", ["ring", "matcha", "multigraph"])
def test_inproc_silo_loops_equal_the_simulation_strategy(tri, strategy):
    rounds = 6
    plan = _plan(tri, strategy, rounds)
    task = get_task("digits", {"lr": 0.3})
    silos = [Silo(i, 3, 3, task) for i in range(3)]
    net = InProcNetwork(3, silos[0].get_flat().size)
    loops, records = _run_threads(silos, plan, [net.transport(i) for i in range(3)], rounds)
    expected = _server_side(tri, plan, rounds)
    for i in range(3):
        np.testing.assert_array_equal(silos[i].get_flat(), expected[i])
        assert loops[i].lost == {}
    if strategy == "multigraph":  # the rounds exercised isolated silos and stale arrivals
        waited = {(i, r["round"]): r["waited_for"] for i, recs in records.items() for r in recs}
        assert waited[(1, 2)] == 0 and waited[(2, 2)] == 0
        assert any(st for i in range(3) for _, _, st in plan.silo_round(i, 5).inbound)


class _Silent(InProcTransport):
    """A silo that stops sending after ``after`` rounds (its machine died)."""

    def __init__(self, network, silo, after):
        super().__init__(network, silo)
        self.after = after

    def send(self, dst, rnd, kind, array):
        if rnd <= self.after:
            super().send(dst, rnd, kind, array)


def test_lost_in_neighbour_is_waited_for_then_renormalised(tri):
    plan = _plan(tri, "ring", 3)
    task = get_task("digits", {"lr": 0.3})
    silos = [Silo(i, 3, 3, task) for i in range(3)]
    net = InProcNetwork(3, silos[0].get_flat().size)
    transports = [net.transport(0), _Silent(net, 1, after=1), net.transport(2)]
    receiver = next(i for i in range(3) if plan.silo_round(i, 1).inbound[0][0] == 1)  # silo 1's out-neighbour
    loops, records = _run_threads(silos, plan, transports, 3, timeout=0.5)
    assert loops[receiver].lost == {1: "lost in round 2: no model within 0.5 s"}
    rec2 = records[receiver][1]
    assert rec2["missing"] == {"1": "no model within 0.5 s"}
    # with its only in-neighbour gone the silo keeps its own trained model in rounds 2 and 3
    assert records[receiver][2]["received_sum"] == pytest.approx(rec2["trained_sum"], rel=1e-6)
    assert records[receiver][2]["waited_for"] == 0  # a lost silo is not waited for again


# ----------------------------------------------------------------------------- gRPC with mutual TLS
@pytest.fixture(scope="module")
def pki(tmp_path_factory, tri):
    from fedsim.deploy.certs import generate_certificates, generate_silo_certificates

    d = tmp_path_factory.mktemp("pki")
    generate_certificates(d)
    return d, generate_silo_certificates(d, list(tri[0].silos))


def _ports(n):
    out = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            out.append(s.getsockname()[1])
    return out


def _tls(pki, silo):
    from fedsim.peer.grpc import PeerTLS

    d, paths = pki
    return PeerTLS.from_files(paths[silo][0], paths[silo][1], d / "ca.crt")


def _allowed(plan, i):
    return lambda src, k, kind: 1 <= k <= plan.rounds and any(
        j == src and st == (kind == "stale") for j, _, st in plan.silo_round(i, k).inbound)


def test_grpc_silo_loops_equal_inproc_and_refuse_impostors(tri, pki):
    from fedsim.peer.grpc import GrpcTransport

    plan = _plan(tri, "multigraph", 6)
    task = get_task("digits", {"lr": 0.3})
    silos = [Silo(i, 3, 3, task) for i in range(3)]
    size = silos[0].get_flat().size
    ports = _ports(3)
    directory = {j: f"127.0.0.1:{ports[j]}" for j in range(3)}
    transports = [GrpcTransport(i, "run-a", size, f"127.0.0.1:{ports[i]}", directory, _tls(pki, i), _allowed(plan, i),
                                send_timeout=20) for i in range(3)]
    others = []
    try:
        loops, _ = _run_threads(silos, plan, transports, 6)
        expected = _server_side(tri, plan, 6)
        for i in range(3):
            np.testing.assert_array_equal(silos[i].get_flat(), expected[i])
        assert all(t.bytes_sent > 0 for t in transports)
        assert sum(t.bytes_sent for t in transports) == sum(t.bytes_received for t in transports)

        # silo 0 receives fresh models from silo 1 (arc 1->0, strong every round)
        def sender(silo_cert, claims, run="run-a", tls=True):
            t = GrpcTransport(claims, run, size, "127.0.0.1:0", {0: directory[0]},
                              _tls(pki, silo_cert) if tls else None, lambda *a: False, send_timeout=5)
            others.append(t)
            return t

        zeros = np.zeros(size, np.float32)
        imp = sender(silo_cert=2, claims=1)
        imp.send(0, 1, "fresh", zeros)
        why = imp.flush(5)[0]
        assert "PERMISSION_DENIED" in why and "names ['silo-2.fedsim'" in why and "claims to be silo 1" in why
        wrong_run = sender(silo_cert=1, claims=1, run="run-b")
        wrong_run.send(0, 1, "fresh", zeros)
        assert "PERMISSION_DENIED" in wrong_run.flush(5)[0]
        no_arc = sender(silo_cert=2, claims=2)  # 2->0 is not an arc of this multigraph
        no_arc.send(0, 1, "fresh", zeros)
        assert "has no fresh arc to silo 0" in no_arc.flush(5)[0]
        poisoned = sender(silo_cert=1, claims=1)
        bad = zeros.copy()
        bad[7] = np.nan
        poisoned.send(0, 2, "fresh", bad)
        assert poisoned.flush(5)[0] == "refused: model has 1 non-finite value(s)"
        arrived, missing = transports[0].receive({1: "fresh"}, 2, 0.1)
        assert arrived == {} and missing == {1: "refused: model has 1 non-finite value(s)"}
        anonymous = sender(silo_cert=1, claims=1, tls=False)  # plaintext to a TLS peer: no handshake
        anonymous.send(0, 1, "fresh", zeros)
        assert anonymous.flush(8)[0].startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED", "not delivered"))
        assert transports[0].receive({1: "fresh"}, 1, 0.1)[0] == {}
    finally:
        for t in transports + others:
            t.close()


def test_sender_only_talks_to_the_receivers_certificate(tri, pki):
    """A process listening at silo 0's address with silo 2's certificate gets nothing from silo 1."""
    from fedsim.peer.grpc import GrpcTransport

    size = 8
    port = _ports(1)[0]
    fake = GrpcTransport(0, "run-a", size, f"127.0.0.1:{port}", {}, _tls(pki, 2), lambda *a: True)
    real = GrpcTransport(1, "run-a", size, "127.0.0.1:0", {0: f"127.0.0.1:{port}"}, _tls(pki, 1), lambda *a: True,
                         send_timeout=3)
    try:
        real.send(0, 1, "fresh", np.zeros(size, np.float32))
        why = real.flush(6)[0]
        assert why.startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED", "not delivered")), why
        assert fake.receive({1: "fresh"}, 1, 0.1)[0] == {}
    finally:
        fake.close()
        real.close()


def test_node_claiming_another_silo_is_refused(pki, task_identity):
    """partition-id 0 with silo 1's peer certificate: the ClientApp refuses to serve."""
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    from fedsim.apps.client_app import app

    d, paths = pki
    node = {"partition-id": 0, "num-partitions": 3, "peer-port": 1, "peer-address": "127.0.0.1:1",
            "peer-cert": str(paths[1][0]), "peer-key": str(paths[1][1]), "peer-ca": str(d / "ca.crt")}
    ctx = Context(run_id=1, node_id=5, node_config=node, state=RecordDict(), run_config={})
    msg = Message(RecordDict({"config": ConfigRecord({})}), 5, "query")
    msg.metadata.__dict__["_message_id"] = "q1"
    with pytest.raises(FedsimError, match="claims silo 0 .* peer certificate is silo 1's"):
        app(msg, ctx)  # (a SuperNode turns this into an error reply; the ServerApp then stops)
    node["partition-id"] = 1  # the right silo: served, with its peer address
    reply = app(msg, Context(run_id=1, node_id=5, node_config=node, state=RecordDict(), run_config={}))
    assert not reply.has_error() and reply.content["peer"]["address"] == "127.0.0.1:1"
