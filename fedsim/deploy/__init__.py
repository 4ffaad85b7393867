"""Deployment on Flower's deployment engine: SuperLink, SuperNodes, TLS, authentication.

The same ClientApp as simulation (:mod:`fedsim.apps.client_app`) runs on
each silo's SuperNode; the SuperLink runs fedsim's round loop
(:mod:`fedsim.deploy.serverapp`). ``fedsim deploy`` (:mod:`fedsim.cli.deploy`)
writes certificates and node keys, prints and runs the exact
``flower-superlink`` / ``flower-supernode`` / ``flwr`` command lines, and starts
a whole deployment on localhost (:mod:`fedsim.deploy.local`);
:mod:`fedsim.deploy.wanemu` shapes each SuperNode's link like a WAN.
"""
