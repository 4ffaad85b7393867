"""Flower apps and engines: the run plan, the ServerApp's round loops, the ClientApp, the Simulation
Engine and MPI engines, and the run directory's records."""
