"""The peer data plane: decentralized training where the silos move their models themselves.

:mod:`fedsim.peer.loop` is the silo loop (one module); the transports carry it
in process (:mod:`fedsim.peer.transport`), over gRPC with mutual TLS
(:mod:`fedsim.peer.grpc`, identities in :mod:`fedsim.peer.identity`) and over
MPI (:mod:`fedsim.peer.mpi`). :mod:`fedsim.peer.silo` holds a silo's model and
its local round, shared with the Simulation Engine's ClientApp.
"""
