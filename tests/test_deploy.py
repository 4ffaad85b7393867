"""Deployment: certificates, node keys, command lines, lost-silo mixing, real SuperLink/SuperNodes.

Fast tests check the TLS material (including a real TLS handshake with and
without the CA), the node keys against Flower's own loaders, the exact
command lines and the renormalised mixing on hand-computed matrices. A
round loop on an in-process grid (the ClientApp called directly, one silo
"dying") checks that a round completes with the silos that answered and
that the minimum-silos rule stops a run.

The slow tests start one real deployment on localhost — a SuperLink with TLS
and SuperNode authentication and three SuperNodes — and run on it: two rounds
of ``ring`` on the digits task (metrics and what each silo received, through
the model fingerprints of ``tests/test_training.py``), the refusal of an
unregistered SuperNode and of clients without the CA certificate, a
SuperNode killed mid-run, and finally that no process is left behind.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    ClientAppGrid as InProcessGrid,  # nodes running fedsim's ClientApp in this process
)

from fedsim.apps.config import RunConfig
from fedsim.deploy import certs, commands, keys
from fedsim.errors import FedsimError
from fedsim.strategies import mixing as faults  # the renormalisation rule of lost silos


@pytest.fixture(scope="module")
def net_path(tri_network) -> str:
    return tri_network


# ----------------------------------------------------------------------------- certificates
def test_certificates_chain_sans_and_modes(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    paths = certs.generate_certificates(tmp_path, "localhost,127.0.0.1,silo.example.org")
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    assert server.issuer == ca.subject
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes,
                           ec.ECDSA(server.signature_hash_algorithm))  # raises if not signed by the CA
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certs.certificate_sans(paths.server_cert) == ["localhost", "127.0.0.1", "silo.example.org"]
    for key in (paths.ca_key, paths.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(FedsimError, match="already holds keys"):
        certs.generate_certificates(tmp_path)
    with pytest.raises(FedsimError, match="neither an IP address nor a host name"):
        certs.generate_certificates(tmp_path / "x", "bad host")


def _tls_server(paths) -> tuple[socket.socket, threading.Thread]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(paths.server_cert, paths.server_key)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def serve():
        for _ in range(2):
            try:
                conn, _ = srv.accept()
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError):
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def test_tls_handshake_needs_the_ca(tmp_path):
    paths = certs.generate_certificates(tmp_path)
    srv, t = _tls_server(paths)
    port = srv.getsockname()[1]
    try:
        with_ca = ssl.create_default_context(cafile=str(paths.ca_cert))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            with with_ca.wrap_socket(s, server_hostname="127.0.0.1") as tls:
                assert tls.recv(2) == b"ok"
        without_ca = ssl.create_default_context()  # system roots only
        with pytest.raises(ssl.SSLCertVerificationError):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                without_ca.wrap_socket(s, server_hostname="127.0.0.1")
    finally:
        srv.close()
        t.join(timeout=5)


# ----------------------------------------------------------------------------- node keys
def test_node_keys_load_with_flowers_loaders(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from flwr.cli.supernode.register import try_load_public_key

    made = keys.generate_node_keys(tmp_path, names=["Paris", "Los Angeles, CA"])
    assert [k.name for k in made] == ["Paris", "Los_Angeles_CA"]
    for k in made:
        priv = serialization.load_ssh_private_key(k.private.read_bytes(), password=None)
        assert isinstance(priv, ec.EllipticCurvePrivateKey) and priv.curve.name == "secp384r1"
        assert stat.S_IMODE(k.private.stat().st_mode) == 0o600
        assert k.public.read_text().startswith("ecdsa-sha2-nistp384 ")
        assert try_load_public_key(k.public)  # what `flwr supernode register` accepts
        assert keys.public_key_matches(k.private, k.public)
    assert not keys.public_key_matches(made[0].private, made[1].public)
    with pytest.raises(FedsimError, match="exists"):
        keys.generate_node_keys(tmp_path, names=["Paris"])


def _fail_on_write(monkeypatch, n: int) -> list:
    """Make the ``n``-th file write of :mod:`fedsim.deploy.files` raise (returns the names written)."""
    from fedsim.deploy import files

    real, written = files._write_file, []

    def flaky(path, data, mode):
        if len(written) + 1 == n:
            raise OSError(28, "No space left on device")
        real(path, data, mode)
        written.append(path.name)

    monkeypatch.setattr(files, "_write_file", flaky)
    return written


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("n", [1, 4, 6])
def test_keys_are_written_all_or_nothing(tmp_path, monkeypatch, n):
    out = tmp_path / "keys"
    written = _fail_on_write(monkeypatch, n)
    with pytest.raises(OSError, match="No space"):
        keys.generate_node_keys(out, names=["a", "b", "c"])
    assert len(written) == n - 1
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no folder, no temporary folder

    # into a folder that already holds files: those stay as they were
    monkeypatch.undo()
    old = keys.generate_node_keys(out, names=["a", "z"])
    before = _tree(out)
    _fail_on_write(monkeypatch, n)
    with pytest.raises(OSError, match="No space"):
        keys.generate_node_keys(out, names=["a", "b", "c"], overwrite=True)
    assert _tree(out) == before and [p.name for p in tmp_path.iterdir()] == ["keys"]
    assert keys.public_key_matches(old[0].private, old[0].public)


def test_keys_fail_on_a_read_only_target_and_leave_nothing(tmp_path):
    out = tmp_path / "keys"
    keys.generate_node_keys(out, names=["a"])
    before = _tree(out)
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as a user who may write into read-only folders")
        with pytest.raises(OSError):
            keys.generate_node_keys(out, names=["a", "b"], overwrite=True)
    finally:
        out.chmod(0o755)
    assert _tree(out) == before and [p.name for p in tmp_path.iterdir()] == ["keys"]


@pytest.mark.parametrize("n", [2, 4])
def test_certificates_are_written_all_or_nothing(tmp_path, monkeypatch, n):
    out = tmp_path / "certs"
    _fail_on_write(monkeypatch, n)
    with pytest.raises(OSError, match="No space"):
        certs.generate_certificates(out)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    certs.generate_certificates(out)
    certs.generate_silo_certificates(out, ["p", "q"])
    before = _tree(out)
    _fail_on_write(monkeypatch, n)
    with pytest.raises(OSError, match="No space"):
        certs.generate_certificates(out, overwrite=True)
    with pytest.raises(OSError, match="No space"):
        certs.generate_silo_certificates(out, ["p", "q", "r"], overwrite=True)
    assert _tree(out) == before and [p.name for p in tmp_path.iterdir()] == ["certs"]
    assert sorted(p.name for p in (out / "silos").iterdir()) == ["silo-0.key", "silo-0.pem", "silo-1.key",
                                                                 "silo-1.pem"]


# ----------------------------------------------------------------------------- command lines
def test_command_lines_secure_by_default():
    sl = commands.superlink_command(port=9092, ca_cert="c/ca.crt", server_cert="c/server.pem",
                                    server_key="c/server.key")
    assert sl[1:] == ["--ssl-ca-certfile", "c/ca.crt", "--ssl-certfile", "c/server.pem",
                      "--ssl-keyfile", "c/server.key", "--enable-supernode-auth", "--host", "127.0.0.1",
                      "--port", "9092", "--disable-runtime-dependency-installation"]
    assert Path(sl[0]).name == "flower-superlink"
    with pytest.raises(FedsimError, match="needs TLS"):
        commands.superlink_command(insecure=True)
    with pytest.raises(FedsimError, match="TLS needs"):
        commands.superlink_command()
    assert "--insecure" in commands.superlink_command(insecure=True, auth=False)

    sn = commands.supernode_command(superlink="10.0.0.1:9092", silo=2, n_silos=3, name="Montreal",
                                    task="digits", root_cert="ca.crt", private_key="m.key", runtime_port=9095)
    assert sn[1:] == ["--superlink", "10.0.0.1:9092", "--root-certificates", "ca.crt",
                      "--auth-supernode-private-key", "m.key", "--node-config",
                      'partition-id=2 num-partitions=3 silo-name="Montreal" task="digits"', "--port", "9095"]
    with pytest.raises(FedsimError, match="CA certificate"):
        commands.supernode_command(superlink="h:1", silo=0, n_silos=3)
    with pytest.raises(FedsimError, match="HOST:PORT"):
        commands.supernode_command(superlink="nohost", silo=0, n_silos=3, root_cert="ca.crt")
    fast = commands.supernode_command(superlink="h:1", silo=0, n_silos=2, root_cert="ca.crt", fast=True)
    assert fast[1:3] == ["-m", "fedsim.deploy.fastnode"] and "--superlink" in fast
    line = commands.shell_line(sn[1:], {"FLWR_HOME": "/h"})
    assert "--node-config 'partition-id=2 num-partitions=3 silo-name=\"Montreal\" task=\"digits\"'" in line
    with pytest.raises(FedsimError, match="0.01..60"):
        commands.deployment_env("/h", superexec_poll_s=0.001)


def test_node_config_is_what_flower_parses():
    from flwr.common.config import parse_config_args

    parsed = parse_config_args([commands.node_config(1, 3, "Sao Paulo", "digits")])
    assert parsed == {"partition-id": 1, "num-partitions": 3, "silo-name": "Sao Paulo", "task": "digits"}
    # Flower's parser has no escapes: a double quote in a name becomes a single quote.
    parsed = parse_config_args([commands.node_config(0, 2, 'The "Hub"')])
    assert parsed == {"partition-id": 0, "num-partitions": 2, "silo-name": "The 'Hub'"}
    parsed = parse_config_args([commands.node_config(2, 3, state_dir="/srv/fedsim state/silo-2")])
    assert parsed == {"partition-id": 2, "num-partitions": 3, "state-dir": "/srv/fedsim state/silo-2"}
    peer = commands.peer_settings(9300, "10.0.0.2:9300", cert="/c/silo-2.pem", key="/c/silo-2.key", ca="/c/ca.crt")
    parsed = parse_config_args([commands.node_config(2, 3, peer=peer)])
    assert parsed == {"partition-id": 2, "num-partitions": 3, "peer-port": 9300, "peer-address": "10.0.0.2:9300",
                      "peer-cert": "/c/silo-2.pem", "peer-key": "/c/silo-2.key", "peer-ca": "/c/ca.crt"}


def test_cli_dry_runs_print_the_commands(tmp_path, net_path, capsys):
    from fedsim.cli import main

    assert main(["deploy", "certs", "--out", str(tmp_path / "c"), "--topology", net_path]) == 0
    assert "3 silo certificates" in capsys.readouterr().out
    assert certs.silo_of_certificate(tmp_path / "c" / "silos" / "silo-2.pem") == 2
    assert main(["deploy", "keys", "--topology", net_path, "--out", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    assert "supernode register" in out and "Montreal.key.pub" in out
    assert main(["deploy", "superlink", "--certs", str(tmp_path / "c"), "--dry-run"]) == 0
    said = capsys.readouterr()
    assert "--enable-supernode-auth" in said.out
    # the SuperLink (Control API) on loopback, the Fleet-only gateway on the public address
    assert "--host 127.0.0.1 --port 9093" in said.out
    assert "fedsim.deploy.gateway --listen 0.0.0.0:9092 --upstream 127.0.0.1:9093" in said.out
    assert said.err.count("\n") == 1 and "Fleet API only" in said.err
    assert main(["deploy", "superlink", "--certs", str(tmp_path / "c"), "--no-gateway", "--dry-run"]) == 0
    said = capsys.readouterr()
    assert "--host 0.0.0.0 --port 9092" in said.out and "fedsim.deploy.gateway" not in said.out
    assert said.err.count("\n") == 1 and said.err.startswith("WARNING: the Control API is public")
    assert main(["deploy", "supernode", "--silo", "Brussels", "--superlink", "127.0.0.1:9092",
                 "--topology", net_path, "--root-certificates", str(tmp_path / "c" / "ca.crt"),
                 "--key", str(tmp_path / "k" / "Brussels.key"), "--peer-address", "brussels.example.org:9300",
                 "--peer-cert", str(tmp_path / "c" / "silos" / "silo-1.pem"),
                 "--peer-key", str(tmp_path / "c" / "silos" / "silo-1.key"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "partition-id=1 num-partitions=3" in out and 'peer-address=\"brussels.example.org:9300\"' in out
    assert "silos/silo-1.pem" in out and "peer-port=9300" in out
    # a silo's node cannot carry another silo's peer identity
    assert main(["deploy", "supernode", "--silo", "Brussels", "--superlink", "127.0.0.1:9092",
                 "--topology", net_path, "--root-certificates", str(tmp_path / "c" / "ca.crt"),
                 "--key", str(tmp_path / "k" / "Brussels.key"),
                 "--peer-cert", str(tmp_path / "c" / "silos" / "silo-0.pem"),
                 "--peer-key", str(tmp_path / "c" / "silos" / "silo-0.key"), "--dry-run"]) == 2
    assert "is silo 0's identity, not silo 1's" in capsys.readouterr().err
    assert main(["deploy", "supernode", "--silo", "Lyon", "--superlink", "127.0.0.1:9092",
                 "--topology", net_path, "--insecure", "--dry-run"]) == 2
    err = capsys.readouterr().err  # a mistake gets one line; the --insecure warning only for a valid command
    assert "unknown silo 'Lyon'" in err and "WARNING: --insecure" not in err
    assert main(["deploy", "supernode", "--silo", "0", "--superlink", "127.0.0.1:9092",
                 "--topology", net_path, "--root-certificates", str(tmp_path / "c" / "ca.crt"), "--dry-run"]) == 2
    assert "give --key" in capsys.readouterr().err


def test_app_folder_round_trips_the_run_config(tmp_path):
    import tomllib

    from fedsim.deploy.appdir import write_app, write_connection

    cfg = RunConfig(network="gaia", strategy="ring", rounds=3, task_options={"lr": 0.3, "note": 'a "b"'})
    app = write_app(tmp_path / "app", cfg, tmp_path / "run", poll_s=0.05, min_silos=2)
    conf = tomllib.loads((app / "pyproject.toml").read_text())
    run_config = conf["tool"]["flwr"]["app"]["config"]
    assert RunConfig(**json.loads(run_config["fedsim-config"])) == cfg
    assert run_config["min-silos"] == 2 and run_config["out"] == str((tmp_path / "run").resolve())
    assert conf["tool"]["flwr"]["app"]["components"]["clientapp"] == "fedsim.apps.client_app:app"
    path = write_connection(tmp_path / "home", "a", "127.0.0.1:1", root_cert=tmp_path / "ca.crt")
    write_connection(tmp_path / "home", "b", "127.0.0.1:2", insecure=True)
    flwr_conf = tomllib.loads(path.read_text())
    assert flwr_conf["superlink"]["default"] == "a"
    assert flwr_conf["superlink"]["a"]["root-certificates"] == str(tmp_path / "ca.crt")
    assert flwr_conf["superlink"]["b"] == {"address": "127.0.0.1:2", "insecure": True}


# ----------------------------------------------------------------------------- flwr run . (Flower App)
@pytest.mark.slow  # starts flower-superlink --help (seconds of imports)
def test_flwr_app_configuration_is_what_flower_reads(tmp_path, net_path, monkeypatch):
    """`python -m fedsim.deploy.flwrapp` (the README's Flower-App way): the federation has one
    SuperNode per silo, the local SuperLink installs nothing, `flwr run` follows the run to its end."""
    import subprocess

    from flwr.cli.flower_config import read_superlink_connection
    from flwr.common.config import parse_config_args
    from flwr.supercore.utils import simulation_config_from_json

    from fedsim.deploy import flwrapp

    cmd = flwrapp.flwr_command(".", net_path, ["--run-config", "rounds=2"], cpus=2)
    assert cmd[1:5] == ["run", ".", "fedsim-sim", "--stream"]  # --stream: a failure ends flwr run
    fed = cmd[cmd.index("--federation-config") + 1]
    parsed = {k.replace("-", "_"): v for k, v in parse_config_args([fed]).items()}
    sim = simulation_config_from_json(parsed)
    assert sim.num_supernodes == 3 and sim.init_args_num_cpus == 2  # the 3 silos of the test network
    assert parse_config_args([cmd[cmd.index("--run-config") + 1]]) == {"network": net_path}
    home = tmp_path / "home"
    (home).mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "mine"\n[superlink.mine]\naddress = "h:1"\n'
                                      'insecure = true\n')
    flwrapp.write_connection(home)
    monkeypatch.setenv("FLWR_HOME", str(home))
    assert read_superlink_connection("fedsim-sim").address == ":local-in-memory:"
    assert read_superlink_connection(None).name == "mine"  # the user's default and connection are kept
    # the local SuperLink `flwr` starts inherits this environment: runtime installation off
    help_text = subprocess.run([commands._bin("flower-superlink"), "--help"], capture_output=True, text=True,
                               env=os.environ | flwrapp.ENV, timeout=60).stdout
    assert "runtime dependency installation is disabled" in " ".join(help_text.split())
    assert flwrapp.ENV["FLWR_TELEMETRY_ENABLED"] == "0"


# ----------------------------------------------------------------------------- renormalised mixing
def test_renormalise_hand_computed():
    # FedAvg weights n_j / sum n with n = (2, 3, 5); silo 1 lost.
    w = np.tile([0.2, 0.3, 0.5], (3, 1))
    got = faults.renormalise(w, np.array([True, False, True]))
    np.testing.assert_allclose(got, [[2 / 7, 0, 5 / 7], [0, 1, 0], [2 / 7, 0, 5 / 7]])
    # Ring W = (I + P)/2 on 0->1->2->0, silo 2 lost: silo 0 (fed by 2) keeps itself.
    ring = np.array([[0.5, 0, 0.5], [0.5, 0.5, 0], [0, 0.5, 0.5]])
    np.testing.assert_allclose(faults.renormalise(ring, np.array([True, True, False])),
                               [[1, 0, 0], [0.5, 0.5, 0], [0, 0, 1]])
    # A row whose surviving weights sum to <= 0 keeps its own trained model.
    neg = np.array([[-0.2, 1.2, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(faults.renormalise(neg, np.array([True, False, True]))[0], [1, 0, 0])
    # A stale arrival (a model the server already holds) survives its sender's loss.
    stale = np.zeros((3, 3), dtype=bool)
    stale[0, 2] = True
    np.testing.assert_allclose(faults.renormalise(ring, np.array([True, True, False]), stale)[0],
                               [0.5, 0, 0.5])
    np.testing.assert_allclose(faults.renormalise(ring, np.ones(3, bool)), ring)


def _ring_w(net_path: str, cfg: RunConfig) -> np.ndarray:
    from fedsim.topologies import build_schedule, connectivity
    from fedsim.topologies.delay import DelayProfile
    from fedsim.topologies.networks import load_network

    prof = DelayProfile(**{k: v for k, v in cfg.profile.items() if k != "description"})
    sched = build_schedule("ring", connectivity(load_network(net_path)), prof)
    w = 0.5 * np.eye(3)
    for u, v in sched.arcs.tolist():
        w[v, u] += 0.5
    return w


def _fp(trace: dict, k: int, prefix: str, silos) -> np.ndarray:
    return np.array([[trace[k][s][f"{prefix}_sum"], trace[k][s][f"{prefix}_signed"]] for s in silos])


def test_silo_query_asks_again_a_node_that_did_not_answer(task_identity, monkeypatch):
    """A SuperNode may hold a new run's query reply until it pulls its next message: ask again."""
    from fedsim.apps import server_app

    class HoldsFirstReply(InProcessGrid):
        def __init__(self, n):
            super().__init__(n)
            self.sent: list[list[int]] = []
            self.held = None

        def send_and_receive(self, messages, *, timeout=None):
            self.sent.append([m.metadata.dst_node_id for m in messages])
            replies = super().send_and_receive(messages, timeout=timeout)
            if len(self.sent) == 1:  # silo 1's node keeps its reply this time
                self.held = next(r for r in replies if r.metadata.src_node_id == self.nodes[1])
                return [r for r in replies if r is not self.held]
            return replies

    grid = HoldsFirstReply(3)
    a, b, c = grid.nodes
    assert server_app._map_silos(grid, grid.nodes, 3, retry=0.01) == {0: a, 1: b, 2: c}
    assert grid.sent == [[a, b, c], [b]]  # only the silent node was asked again


@pytest.mark.slow
def test_lost_silo_round_completes_and_min_silos_stops(net_path, tmp_path, task_identity):
    from fedsim.apps.server_app import RunStopped, serve

    grid = InProcessGrid(3)
    trace: dict[int, dict[int, dict]] = {}
    mixing: dict[int, np.ndarray] = {}

    def on_round(k, outcome, strategy):
        trace[k] = {s: dict(m) for s, m in outcome.train.items()}
        mixing[k] = getattr(outcome, "mixing", None)  # None for the final evaluation
        lost[k] = dict(getattr(outcome, "lost", {}))
        if k == 1:
            grid.dead.add(grid.nodes[2])  # silo 2's node dies after round 1

    lost: dict[int, dict] = {}
    cfg = RunConfig(network=net_path, strategy="ring", rounds=3, seed=3, compute_ms=2.0,
                    task_options={"lr": 0.3}, max_failed_rounds=99, checkpoint_every=1)
    serve(grid, cfg, tmp_path / "ok", progress=False, on_round=on_round,
          tolerate_lost=True, min_silos=2)
    w = _ring_w(net_path, cfg)
    w_ren = w.copy()
    w_ren[:, 2] = 0
    w_ren /= w_ren.sum(1, keepdims=True)
    w_ren[2] = [0, 0, 1]
    np.testing.assert_allclose(mixing[1], w)
    np.testing.assert_allclose(mixing[2], w_ren)
    assert sorted(trace[2]) == [0, 1] and lost[2] == lost[3] == {2: 2}
    # Round 3: silos 0 and 1 received the renormalised mixture of round 2's trained models.
    np.testing.assert_allclose(_fp(trace, 3, "received", [0, 1]),
                               w_ren[:2, :2] @ _fp(trace, 2, "trained", [0, 1]), rtol=2e-4, atol=2e-3)
    failures = json.loads((tmp_path / "ok" / "failures.json").read_text())
    assert [f["round"] for f in failures] == [2, 3]
    assert "lost: no reply" in failures[0]["silos"]["2"] and failures[1]["silos"]["2"] == "lost in round 2"
    rows = list(csv.DictReader(open(tmp_path / "ok" / "rounds.csv")))
    assert [r["failed"] for r in rows] == ["", "", "2", "2"]

    grid = InProcessGrid(3)
    with pytest.raises(RunStopped, match=r"round 2: only 2 of 3 silos answered \(--min-silos 3\)"):
        serve(grid, cfg, tmp_path / "stop", progress=False, on_round=on_round,
              tolerate_lost=True, min_silos=3)
    rows = list(csv.DictReader(open(tmp_path / "stop" / "rounds.csv")))
    assert [int(r["round"]) for r in rows] == [0, 1]
    assert json.loads((tmp_path / "stop" / "summary.json").read_text())["stopped"]


# ----------------------------------------------------------------------------- real deployment
@pytest.fixture(scope="module")
def cluster(tmp_path_factory, net_path):
    from fedsim.deploy.local import LocalCluster

    c = LocalCluster(tmp_path_factory.mktemp("deploy") / "deploy", net_path, "digits", verbose=False)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _run(cluster, net_path, out: Path, rounds: int, on_trace=None, min_silos: int = 0,
         **kw) -> tuple[dict, dict]:
    kw = {"seed": 3, "checkpoint_every": 1, "data_plane": "hub", "strategy": "ring"} | kw
    cfg = RunConfig(network=net_path, task="digits", rounds=rounds, compute_ms=2.0, task_options={"lr": 0.3}, **kw)
    run_id = cluster.submit(cfg, out, min_silos=min_silos)
    trace: dict[int, dict] = {}

    def record(rec):
        trace[rec["round"]] = rec
        if on_trace:
            on_trace(rec)

    outcome = cluster.client.follow(run_id, out, rounds, timeout=400, on_trace=record)
    return outcome, trace


def _stop_after_round(cluster, cfg: RunConfig, out: Path, k: int) -> dict:
    """Submit ``cfg`` and stop the run (``flwr stop``) once round ``k`` is on record; returns its outcome."""
    run_id = cluster.submit(cfg, out)
    stopped = []

    def stop(rec):
        if rec["round"] >= k and not stopped:
            stopped.append(cluster.client.stop_run(run_id))

    first = cluster.client.follow(run_id, out, cfg.rounds, timeout=400, on_trace=stop)
    assert stopped == [True] and first["sub_status"] == "stopped", first
    return first


def _fingerprints(trace, k, prefix, silos):
    return np.array([[trace[k]["train"][str(s)][f"{prefix}_sum"], trace[k]["train"][str(s)][f"{prefix}_signed"]]
                     for s in silos])


@pytest.mark.slow
def test_ring_on_real_superlink_and_supernodes(cluster, net_path, tmp_path):
    from fedsim.timing.simulate import simulate
    from fedsim.topologies import build_schedule, connectivity
    from fedsim.topologies.delay import DelayProfile
    from fedsim.topologies.networks import load_network

    assert cluster.auth and not cluster.insecure
    out = tmp_path / "ring"
    outcome, trace = _run(cluster, net_path, out, rounds=2)
    assert outcome["sub_status"] == "completed", outcome
    assert outcome["serverapp"]["status"] == "completed"
    # Each node served the silo of its --node-config partition-id.
    assert sorted(int(m["silo"]) for m in trace[1]["train"].values()) == [0, 1, 2]
    cfg = RunConfig.from_file(out / "config.json")
    w = _ring_w(net_path, cfg)
    np.testing.assert_allclose(trace[1]["mixing"], w)
    for k in (2, 3):  # round 2 and the final evaluation received W applied to the trained models
        np.testing.assert_allclose(_fingerprints(trace, k, "received", range(3)),
                                   w @ _fingerprints(trace, k - 1, "trained", range(3)), rtol=2e-4, atol=2e-3)
    rows = list(csv.DictReader(open(out / "rounds.csv")))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    assert all(float(r["wall_s"]) > 0 for r in rows[1:])  # measured round times ...
    prof = DelayProfile(**{k: v for k, v in cfg.profile.items() if k != "description"})
    conn = connectivity(load_network(net_path))
    sim = simulate(build_schedule("ring", conn, prof), conn, prof, rounds=2, seed=3).round_ms
    np.testing.assert_allclose([float(r["sim_round_ms"]) for r in rows[1:]], sim, rtol=1e-5)  # ... beside simulated
    for r in rows:
        assert 0 <= float(r["eval_metric"]) <= 1 and all(0 <= float(r[f"accuracy_s{i}"]) <= 1 for i in range(3))
    assert float(rows[-1]["eval_loss"]) < float(rows[0]["eval_loss"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and summary["wall_total_s"] > 0
    assert (out / "metric_vs_time.png").exists()
    phases = [json.loads(x) for x in (out / "deploy" / "phases.jsonl").read_text().splitlines()]
    # the silo query is asked again while some node has not answered (the first ClientApp start can
    # outlast one query attempt on a loaded machine); then one phase per train round and the evaluation
    types = [p["type"] for p in phases]
    queries = types.index("train")
    assert queries >= 1 and set(types[:queries]) == {"query"} and types[queries:] == ["train", "train", "evaluate"]
    assert all(p["replies"] == 3 for p in phases[queries - 1:])


@pytest.mark.slow
def test_unregistered_supernode_is_refused(cluster):
    from fedsim.deploy.local import SiloNode
    from fedsim.deploy.procs import free_port

    before = {n["node_id"] for n in cluster.client.node_status()}
    key = keys.write_node_key(cluster.workspace / "keys", "intruder", overwrite=True)
    node = SiloNode(0, "intruder", key, free_port(), cluster.fleet_address)
    proc = cluster.start_node(node, name="intruder", max_wait_time=20)
    assert proc.wait(timeout=120) != 0
    assert "Failed to activate SuperNode" in cluster.procs.log("intruder").read_text()
    assert "No SuperNode found with the given public key" in cluster.procs.log("superlink").read_text()
    assert {n["node_id"] for n in cluster.client.node_status()} == before


@pytest.mark.slow
def test_public_address_refuses_control_requests_operator_keeps_them(cluster, net_path, tmp_path):
    """Someone who reaches the address SuperNodes dial and holds the CA certificate cannot register a
    key, list nodes or submit a run there; the operator (the SuperLink's own loopback port) can."""
    import subprocess

    from fedsim.deploy import appdir
    from fedsim.deploy.local import SuperLinkClient

    assert cluster.gateway and cluster.fleet_port != cluster.port
    nodes = {n["node_id"] for n in cluster.client.node_status()}  # the operator lists them
    assert len(nodes) == 3
    outsider = SuperLinkClient(cluster.fleet_address, cluster.cert_paths.ca_cert, False, cluster.env)
    with pytest.raises(Exception, match="403"):
        outsider.node_status()
    outsider.close()
    home = tmp_path / "outsider-home"  # the outsider's own flwr configuration: the public address + CA
    appdir.write_connection(home, "public", cluster.fleet_address, root_cert=cluster.cert_paths.ca_cert)
    env = cluster.run_env | {"FLWR_HOME": str(home)}
    key = keys.write_node_key(tmp_path / "k", "outsider")
    app = appdir.write_app(tmp_path / "app", RunConfig(network=net_path, strategy="ring", rounds=1),
                           tmp_path / "out", poll_s=0.05)
    for cmd in (commands.register_command(key.public, "public"), commands.run_command(app, "public")):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        said = res.stdout + res.stderr
        assert "403" in said or "Forbidden" in said, said
    refused = cluster.procs.log("gateway").read_text()
    for route in ("list-nodes", "/v1/control/"):
        assert route in refused
    assert {n["node_id"] for n in cluster.client.node_status()} == nodes  # no key was registered
    assert not (tmp_path / "out").exists()  # no ServerApp ran


@pytest.mark.slow
def test_clients_without_the_ca_are_refused(cluster):
    from fedsim.deploy.local import SuperLinkClient
    from fedsim.deploy.procs import free_port

    # Flower's own command with TLS on (no --insecure) but no --root-certificates: only the
    # system's CAs (fedsim's command builder refuses to write this line at all).
    cmd = [commands._bin("flower-supernode"), "--superlink", cluster.fleet_address, "--node-config",
           commands.node_config(1, 3), "--port", str(free_port()), "--max-wait-time", "8"]
    with pytest.raises(FedsimError, match="CA certificate"):
        commands.supernode_command(superlink=cluster.address, silo=1, n_silos=3)
    proc = cluster.procs.start("no-ca", cmd, cluster.run_env, cwd=cluster.workspace)
    assert proc.wait(timeout=120) != 0
    assert "CERTIFICATE_VERIFY_FAILED" in cluster.procs.log("no-ca").read_text()
    blind = SuperLinkClient(cluster.address, ca_cert=None, insecure=False, env=cluster.env)
    blind.ca_cert = None
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        blind.node_status()
    assert len([n for n in cluster.client.node_status() if n["status"] == "online"]) == 3


@pytest.mark.slow
def test_stopped_run_resumes_from_its_checkpoint(cluster, net_path, tmp_path):
    from fedsim.apps.records import checkpoint_round
    from fedsim.deploy.serverapp import prepare_resume

    cfg = RunConfig(network=net_path, strategy="ring", task="digits", rounds=6, seed=5, compute_ms=2.0,
                    task_options={"lr": 0.3}, checkpoint_every=2, data_plane="hub")
    outcome, full = _run(cluster, net_path, tmp_path / "full", rounds=6, seed=5, checkpoint_every=2)
    assert outcome["serverapp"]["status"] == "completed", outcome

    out = tmp_path / "stopped"
    first = _stop_after_round(cluster, cfg, out, 3)
    assert first["serverapp"]["status"] == "stopped" and not (out / "summary.json").exists()
    done = checkpoint_round(out)
    assert done in (2, 4)  # the last checkpoint before the stop
    ran = [json.loads(x)["round"] for x in (out / "deploy" / "trace.jsonl").read_text().splitlines()]
    assert max(ran) >= done
    skip = prepare_resume(out)
    assert skip == done  # rounds run after the checkpoint are dropped from the trace: they run again

    seen = []
    run_id = cluster.submit(cfg, out, resume=True)
    second = cluster.client.follow(run_id, out, cfg.rounds, timeout=400, skip=skip,
                                   on_trace=lambda rec: seen.append(rec["round"]))
    assert second["serverapp"]["status"] == "completed" and second["serverapp"]["resumed"], second
    assert seen == list(range(done + 1, cfg.rounds + 2))  # shown once: the rounds it ran (+ final evaluation)
    trace = [json.loads(x) for x in (out / "deploy" / "trace.jsonl").read_text().splitlines()]
    assert [t["round"] for t in trace] == list(range(1, cfg.rounds + 2))
    rows = list(csv.DictReader(open(out / "rounds.csv")))
    assert [int(r["round"]) for r in rows] == list(range(cfg.rounds + 1))
    # the resumed run trained exactly what the uninterrupted one did
    resumed = {t["round"]: t for t in trace}
    for k in range(1, cfg.rounds + 1):
        np.testing.assert_allclose(_fingerprints(resumed, k, "trained", range(3)),
                                   _fingerprints(full, k, "trained", range(3)), rtol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_completed"] == cfg.rounds
    walls = [float(r["wall_s"]) for r in rows[1:]]  # measured times of the kept and the new rounds
    assert summary["wall_total_s"] == pytest.approx(sum(walls), rel=1e-4)
    assert summary["mean_wall_round_s"] == pytest.approx(sum(walls) / cfg.rounds, rel=1e-4)


# ----------------------------------------------------------------------------- the peer data plane
PEER = {"data_plane": "auto", "sync_every": 2, "peer_timeout": 20.0}
METRIC_PREFIXES = ("train_loss", "eval_", "accuracy")


def _metric_columns(path: Path) -> list[dict]:
    rows = list(csv.DictReader(open(path)))
    return [{k: v for k, v in r.items() if k.startswith(METRIC_PREFIXES)} for r in rows]


def _revive(cluster, silo: int, timeout: float = 240) -> None:
    """Start a silo's SuperNode again after a test killed it. Flower re-admits its key only once the
    old node has missed its heartbeats; until then the new SuperNode's activation is refused and it
    exits, so try again until it stays up."""
    import time

    name = f"supernode-{silo}"
    deadline = time.time() + timeout
    while not cluster.procs.alive(name) and time.time() < deadline:
        cluster.start_node(cluster.nodes[silo])
        up = time.time() + 15
        while time.time() < up and cluster.procs.alive(name):
            time.sleep(0.5)
        if not cluster.procs.alive(name):
            time.sleep(5)
    assert cluster.procs.alive(name), f"silo {silo}'s SuperNode could not rejoin: " + cluster.procs.tail(name)
    online = time.time() + 120
    while time.time() < online and len([n for n in cluster.client.node_status() if n["status"] == "online"]) < 3:
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ring", "matcha", "multigraph"])
def test_peer_plane_equals_simulation_and_mpi(cluster, net_path, tmp_path, strategy):
    """Same seed: the gRPC deployment, the Simulation Engine (Ray) and MPI ranks end with the same
    per-silo models and the same metric columns; no model array goes through the SuperLink."""
    import subprocess
    import sys

    from fedsim.apps.simulation import run_simulation

    rounds = 4
    out = tmp_path / "grpc"
    outcome, trace = _run(cluster, net_path, out, rounds, strategy=strategy, **PEER)
    assert outcome["serverapp"]["status"] == "completed", outcome
    deployed = json.loads((out / "summary.json").read_text())
    assert deployed["data_plane"] == "grpc" and deployed["hub_array_bytes"] == 0
    assert deployed["peer_array_bytes"] > 0
    phases = [json.loads(x)["type"] for x in (out / "deploy" / "phases.jsonl").read_text().splitlines()]
    assert phases == ["query"]  # the segments and the final evaluation use Flower's push/pull directly
    assert sorted(trace) == [1, 2, 3, 4, 5] and all(len(trace[k]["train"]) == 3 for k in trace)

    cfg = RunConfig(network=net_path, strategy=strategy, task="digits", rounds=rounds, seed=3, compute_ms=2.0,
                    task_options={"lr": 0.3}, checkpoint_every=1)
    simulated = run_simulation(cfg, tmp_path / "sim", progress=False)
    assert simulated["data_plane"] == "inproc" and simulated["peer_array_bytes"] == 0
    cmd = [sys.executable, "-m", "fedsim", "run", "--engine", "mpi", "--np", "3", "--topology", net_path,
           "--strategy", strategy, "--task", "digits", "--rounds", str(rounds), "--seed", "3",
           "--compute-ms", "2", "--lr", "0.3", "--sync-every", "2", "--out", str(tmp_path / "mpi"), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    mpi = json.loads((tmp_path / "mpi" / "summary.json").read_text())
    assert mpi["data_plane"] == "mpi" and mpi["peer_array_bytes"] == deployed["peer_array_bytes"]

    assert deployed["final_fingerprints"] == simulated["final_fingerprints"] == mpi["final_fingerprints"]
    columns = _metric_columns(out / "rounds.csv")
    assert len(columns) == rounds + 1 and len(columns[0]) >= 2 + 2 * 3
    assert columns == _metric_columns(tmp_path / "sim" / "rounds.csv") == _metric_columns(tmp_path / "mpi" / "rounds.csv")
    for s in (deployed, mpi):
        assert s["measured_cycle_ms"] > 0 and s["simulated_cycle_time_ms"] == simulated["simulated_cycle_time_ms"]


@pytest.mark.slow
def test_peer_plane_resumes_from_the_silos_state(cluster, net_path, tmp_path):
    """A stopped peer run resumes from its last sync with the silos' own state files and trains exactly
    what an uninterrupted run trains."""
    from fedsim.apps.records import checkpoint_round
    from fedsim.deploy.serverapp import prepare_resume

    kw = PEER | {"strategy": "multigraph", "seed": 5, "checkpoint_every": 2}
    outcome, full = _run(cluster, net_path, tmp_path / "full", 6, **kw)
    assert outcome["serverapp"]["status"] == "completed", outcome
    cfg = RunConfig(network=net_path, task="digits", rounds=6, compute_ms=2.0, task_options={"lr": 0.3}, **kw)
    out = tmp_path / "stopped"
    _stop_after_round(cluster, cfg, out, 3)
    done = checkpoint_round(out)
    assert done in (4,)  # rounds arrive two at a time (one sync): the stop lands after round 4's sync
    skip = prepare_resume(out)
    run_id = cluster.submit(cfg, out, resume=True)
    second = cluster.client.follow(run_id, out, cfg.rounds, timeout=400, skip=skip)
    assert second["serverapp"]["status"] == "completed", second
    trace = {t["round"]: t for t in map(json.loads, (out / "deploy" / "trace.jsonl").read_text().splitlines())}
    assert sorted(trace) == list(range(1, cfg.rounds + 2))
    for k in range(1, cfg.rounds + 1):
        np.testing.assert_array_equal(_fingerprints(trace, k, "trained", range(3)),
                                      _fingerprints(full, k, "trained", range(3)))
    assert _metric_columns(out / "rounds.csv") == _metric_columns(tmp_path / "full" / "rounds.csv")
    assert json.loads((out / "summary.json").read_text())["data_plane"] == "grpc"


@pytest.mark.slow
def test_peer_plane_lost_silo(cluster, net_path, tmp_path):
    """A SuperNode killed mid-run: its out-neighbour waits at most --peer-timeout, mixes without it
    and the run goes on with the two others (--min-silos 2); the loss is recorded."""
    out = tmp_path / "lost"
    killed = []

    def kill_after_round_1(rec):
        if rec["round"] == 1 and not killed:
            killed.extend(cluster.procs.kill("supernode-2"))

    try:
        outcome, trace = _run(cluster, net_path, out, rounds=4, on_trace=kill_after_round_1, min_silos=2,
                              max_failed_rounds=99, **(PEER | {"sync_every": 1, "peer_timeout": 3.0}))
    finally:
        _revive(cluster, 2)
    assert killed and outcome["serverapp"]["status"] == "completed", outcome
    summary = json.loads((out / "summary.json").read_text())
    lost_round = int(summary["lost"]["2"])
    assert lost_round in (2, 3)  # the first round whose model from silo 2 never came
    failures = json.loads((out / "failures.json").read_text())
    assert failures[0]["round"] == lost_round and f"lost in round {lost_round}" in failures[0]["silos"]["2"]
    rows = list(csv.DictReader(open(out / "rounds.csv")))
    assert [r["failed"] for r in rows] == [""] * lost_round + ["2"] * (5 - lost_round)
    cfg = RunConfig.from_file(out / "config.json")
    w = _ring_w(net_path, cfg)
    fed_by_2 = next(i for i in range(3) if i != 2 and w[i, 2] > 0)
    for k in range(lost_round, 5):  # with its in-neighbour gone the silo keeps its own trained model
        assert sorted(trace[k]["train"]) == ["0", "1"]
        nxt = trace[k + 1]["train"][str(fed_by_2)]
        assert nxt["received_sum"] == pytest.approx(trace[k]["train"][str(fed_by_2)]["trained_sum"], rel=1e-6)


@pytest.mark.slow
def test_supernode_killed_mid_run(cluster, net_path, tmp_path):
    out = tmp_path / "fault"
    killed = []

    def kill_after_round_1(rec):
        if rec["round"] == 1 and not killed:
            killed.extend(cluster.procs.kill("supernode-2"))

    outcome, trace = _run(cluster, net_path, out, rounds=3, on_trace=kill_after_round_1,
                          min_silos=2, round_timeout=15.0, max_failed_rounds=99)
    assert killed and outcome["serverapp"]["status"] == "completed", outcome
    lost_round = int(outcome["serverapp"]["lost"]["2"])
    assert lost_round in (2, 3)  # the round whose message silo 2 never answered
    failures = json.loads((out / "failures.json").read_text())
    assert failures[0]["round"] == lost_round and "lost: no reply" in failures[0]["silos"]["2"]
    rows = list(csv.DictReader(open(out / "rounds.csv")))
    assert [r["failed"] for r in rows][lost_round:] == ["2"] * (4 - lost_round)
    cfg = RunConfig.from_file(out / "config.json")
    w = _ring_w(net_path, cfg)
    w_ren = w.copy()
    w_ren[:, 2] = 0
    w_ren /= w_ren.sum(1, keepdims=True)
    w_ren[2] = [0, 0, 1]
    np.testing.assert_allclose(trace[lost_round]["mixing"], w_ren)
    assert sorted(trace[lost_round]["train"]) == ["0", "1"]
    k = lost_round + 1  # the next round (or the final evaluation) received the renormalised mixture
    np.testing.assert_allclose(_fingerprints(trace, k, "received", [0, 1]),
                               w_ren[:2, :2] @ _fingerprints(trace, lost_round, "trained", [0, 1]),
                               rtol=2e-4, atol=2e-3)
    phase = [json.loads(x) for x in (out / "deploy" / "phases.jsonl").read_text().splitlines()]
    assert max(p["total_s"] for p in phase) < 15.0 + 10.0  # bounded by the round timeout


@pytest.mark.slow
def test_no_process_left_behind(cluster):
    from fedsim.deploy.procs import processes_with_env

    cluster.stop()
    assert cluster.procs.leftovers() == []
    assert processes_with_env("FLWR_HOME", str(cluster.home)) == []


def test_process_tree_helpers():
    from fedsim.deploy.procs import descendants, is_alive

    assert is_alive(os.getpid())
    assert os.getpid() not in descendants(os.getpid())
    assert not is_alive(2 ** 22 + 12345)


# ----------------------------------------------------------------------------- link emulator
def test_star_links_reproduce_the_arc_delays():
    from fedsim.deploy.wanemu import star_links
    from fedsim.topologies import build_schedule, connectivity, get_profile
    from fedsim.topologies.networks import load_network

    conn = connectivity(load_network("gaia"))
    prof = get_profile("femnist")
    sched = build_schedule("star", conn, prof)
    server, shapes = star_links(conn, prof, sched)
    assert server == sched.server and sorted(shapes) == sorted(set(range(11)) - {server})
    delays = sched.delays(conn, prof)
    for a, (u, v) in enumerate(sched.arcs.tolist()):
        if u == server:  # Tc + L + M / rate is the model's arc delay
            np.testing.assert_allclose(prof.tc + shapes[v].transfer_ms(prof.model_bits / 8), delays[a], rtol=1e-9)


def test_link_proxy_delays_and_rate_limits():
    import asyncio
    import time

    from fedsim.deploy.wanemu import Emulator, LinkShape

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    with Emulator() as emu:
        server = asyncio.run_coroutine_threadsafe(asyncio.start_server(echo, "127.0.0.1", 0), emu.loop).result()
        target = server.sockets[0].getsockname()[:2]
        host, port = emu.add("a", target, LinkShape(latency_ms=40.0, rate_bps=8e6))  # 1 MB/s
        with socket.create_connection((host, port), timeout=10) as s:
            t0 = time.perf_counter()
            s.sendall(b"x")
            assert s.recv(1) == b"x"
            rtt = time.perf_counter() - t0
            payload = b"y" * 100_000
            t0 = time.perf_counter()
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += s.recv(65536)
            bulk = time.perf_counter() - t0
        emu.loop.call_soon_threadsafe(server.close)
    # one byte: 2 x 40 ms; 100 kB each way: 2 x (40 ms + 0.1 s), the echo pipelines the chunks
    assert 0.080 <= rtt < 0.080 + 0.25
    assert 0.180 <= bulk < 0.280 + 0.4
    assert got == payload
