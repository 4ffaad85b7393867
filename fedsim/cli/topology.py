"""``fedsim topology``: wire the silos of a network one way and print it (arcs, states, cycle time, a map)."""

from __future__ import annotations

from fedsim.cli.common import (
    NETWORK_HELP,
    PLOT_SUFFIXES,
    WIRING_NAMES,
    add_design_flags,
    add_profile_flags,
    add_straggler_flags,
    int_in,
    not_a_strategy,
    out_file,
    refuse_existing,
    resolved_profile,
)
from fedsim.errors import FedsimError, check_int_at_least


def cmd_topology(args) -> int:
    from fedsim.apps.plan import timing_topology
    from fedsim.errors import unknown_name
    from fedsim.timing.simulate import simulate
    from fedsim.topologies import TOPOLOGIES, build_schedule, check_size, connectivity
    from fedsim.topologies.networks import load_network

    not_a_strategy(args.network, "--topology")
    if args.strategy is None:
        raise FedsimError(f"give the wiring with --strategy NAME ({', '.join(TOPOLOGIES)})")
    design = timing_topology(args.strategy)
    if design not in TOPOLOGIES:
        raise unknown_name("strategy", args.strategy, TOPOLOGIES)
    net = load_network(args.network)
    prof = resolved_profile(args, args.profile)
    if args.stragglers or args.compute_ms_file:
        from fedsim.topologies.stragglers import heterogeneous

        prof = heterogeneous(prof, list(net.silos), args.compute_ms_file, args.stragglers, args.seed)
    check_int_at_least("--t", args.t, 1)
    check_size(design, net.n_silos, args.base)  # before any expensive work
    conn = connectivity(net)
    sched = build_schedule(design, conn, prof, t=args.t, base=args.base, budget=args.budget)
    if args.state is not None and not (sched.is_random or args.state < sched.n_states):
        raise FedsimError(f"--state must be in 0..{sched.n_states - 1} for this schedule, got {args.state}")
    refuse_existing(args.plot, "--plot", args.overwrite)
    ct = simulate(sched, conn, prof, rounds=args.rounds, seed=args.seed)
    names = net.silos
    full = sched.delays(conn, prof)
    print(f"network {net.name}: {net.n_silos} silos, {net.n_links} links; profile {prof.name} "
          f"(M={prof.model_bits:g} bit, Tc={prof.compute_ms:g} ms x {prof.local_steps} step(s), "
          f"up/down {prof.upload_bps:g}/{prof.download_bps:g} bit/s, core {prof.core_bps:g} bit/s)")
    label = sched.topology + (f" on {sched.base}, t={args.t}" if sched.base else "")
    print(f"strategy {label}: {len(sched.arcs)} arcs")
    if sched.server is not None:
        print(f"server: {names[sched.server]}")
    if sched.is_random:
        print(f"{len(sched.probabilities)} matchings, activation probabilities "
              f"{', '.join(f'{p:.3f}' for p in sched.probabilities)}; alpha = {sched.alpha:.4f}")
    print("\narcs (delay with shared access links, ms):")
    for a, (u, v) in enumerate(sched.arcs.tolist()):
        extra = f"  x{sched.multiplicity[a]}" if sched.topology == "multigraph" else ""
        extra += f"  matching {sched.matchings[a]}" if sched.is_random else ""
        print(f"  {names[u]} -> {names[v]}  {full[a]:.2f}{extra}")
    if not sched.is_random:
        s_max = sched.n_states
        print(f"\nstates: s_max = {s_max}")
        shown = s_max if args.all_states else min(s_max, 12)
        for s in range(shown):
            iso = [names[i] for i in sched.isolated(s)]
            n_strong = int(sched.state_mask(s).sum())
            print(f"  state {s}: {n_strong}/{len(sched.arcs)} strong arcs; isolated: "
                  f"{', '.join(iso) if iso else '-'}")
        if shown < s_max:
            print(f"  ... {s_max - shown} more states (--all-states to list them)")
    print(f"\ncycle time: {ct.value:.2f} ms  ({ct.definition})")
    if args.plot:
        from fedsim.plots import map_title, topology_map

        state = args.state if args.state is not None else (1 if sched.n_states > 1 else 0)
        round_ms = ct.round_ms
        if not sched.is_random and sched.n_states > 1 and ct.rounds <= state:
            # the drawn state was not among the simulated rounds: simulate up to it
            round_ms = simulate(sched, conn, prof, rounds=state + 1, seed=args.seed).round_ms
        wiring = sched.topology + (f" ({sched.base}, t={args.t})" if sched.base else "")
        topology_map(net, sched, state, args.plot,
                     title=map_title(net.name, sched, state, prof.name, round_ms, ct.value, wiring))
        print(f"map written to {args.plot}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("topology", help="wire the silos of a network one way (a strategy) and print it")
    p.add_argument("--topology", "--network", dest="network", required=True,
                   help=f"the network: {NETWORK_HELP}")
    p.add_argument("--strategy",
                   help=f"the wiring (required): {', '.join(WIRING_NAMES)} "
                        "(fedavg and fedprox are timed as star)")
    add_design_flags(p)
    add_profile_flags(p)
    add_straggler_flags(p)
    p.add_argument("--rounds", type=int_in(1), help="rounds to simulate (multigraph, MATCHA)")
    p.add_argument("--plot", type=out_file(*PLOT_SUFFIXES), help="write a map of the overlay to this PNG/PDF/SVG")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    p.add_argument("--state", type=int_in(0), help="state drawn by --plot (default: 1 for a multigraph)")
    p.add_argument("--all-states", action="store_true", help="list every state, not the first 12")
    p.set_defaults(func=cmd_topology)
