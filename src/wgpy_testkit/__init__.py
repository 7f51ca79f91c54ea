"""wgpy's test and benchmark support: one package imported by the unit tests, the namespace tests, the tools
they run (tests/tools/) and the benchmarks (bench/), so none of them reaches into another by path.

    core_pair    sans-IO Device cores wired by hand on a fake clock (Net: any named cores and peering, with
                 blockable paths and stream stand-ins; Pair: A and B), seeded keys and randomness, IP packet
                 builders: the unit tests' harness, also used by bench/micro.py and the fuzzer
    fuzz         the fuzz targets and invariants of the core's datagram path (bench/fuzz.py is its command line,
                 tests/unit/test_fuzz.py runs a sample)
    procs        bounded commands (`run`, `wait_for`) and tracked background processes (`Proc`)
    netns        network namespaces, veths, addresses, sysctls, nftables, bridges
    wgconf       keys, wg-quick config files, `wg show` / `wgpy show` parsers
    capture      tcpdump in a namespace and a pcap decoder
    lab          `Lab` (owner of everything a test creates), topologies, WireGuard nodes, `start_mesh`
    netlab       all of procs, netns, wgconf, capture and lab in one import, for the namespace tests
    hostile_lab  figures, daemon probes and topologies of the hostile-network and reliability tests

Nothing here is part of wgpy itself, and no module of src/wgpy imports it; it is not sans-IO core either
(tests/unit/test_purity.py scans src/wgpy only).
"""
