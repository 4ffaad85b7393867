"""Deployment on Flower's deployment engine: SuperLink, SuperNodes, TLS, authentication.

The same ClientApp as simulation (:mod:`fedsim.apps.client_app`) runs on
each silo's SuperNode; the SuperLink runs fedsim's round loop
(:mod:`fedsim.deploy.serverapp`). ``fedsim deploy`` (:mod:`fedsim.cli.deploy`)
writes certificates and node keys, prints and runs the exact
``flower-superlink`` / ``flower-supernode`` / ``flwr`` command lines, and starts
a whole deployment on localhost (:mod:`fedsim.deploy.local`);
:mod:`fedsim.deploy.wanemu` shapes each SuperNode's link like a WAN.
The SuperLink's own port (Control API) stays on 127.0.0.1; SuperNodes reach
it through a Fleet-only gateway (:mod:`fedsim.deploy.gateway`).
Multi-file writes are all or nothing (:mod:`fedsim.deploy.files`);
:mod:`fedsim.deploy.status` settles ``serverapp.json`` when a process dies;
:mod:`fedsim.deploy.flwrapp` runs ``flwr run .`` on this project.
"""
