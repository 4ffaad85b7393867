"""``fedsim networks``: the built-in networks."""

from __future__ import annotations


def cmd_networks(args) -> int:
    from fedsim.topologies.networks import (
        BUILTIN_NETWORKS,
        NETWORK_ALIASES,
        builtin_network,
    )

    aliases = {}
    for a, n in NETWORK_ALIASES.items():
        aliases.setdefault(n, []).append(a)
    print(f"{'network':<8} {'silos':>5} {'links':>5} {'coords':>6}  provenance")
    for name in BUILTIN_NETWORKS:
        net = builtin_network(name)
        first = (net.title or net.provenance).splitlines()[0] if (net.title or net.provenance) else ""
        print(f"{name:<8} {net.n_silos:>5} {net.n_links:>5} {'yes' if net.has_coords() else 'no':>6}  {first}")
        if name in aliases:
            print(f"{'':<8} aliases: {', '.join(aliases[name])}")
    print("\nAlso accepted wherever a network is asked for: zoo:NAME (Internet Topology Zoo, "
          "offline via topohub) and a path to a .gml file.")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("networks", help="list the built-in networks")
    p.set_defaults(func=cmd_networks)
