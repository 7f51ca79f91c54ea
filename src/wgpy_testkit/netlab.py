"""Everything a namespace test uses, in one import: `from wgpy_testkit import netlab` or
`from wgpy_testkit.netlab import Lab, run, wait_for, ...`.

The names live in the modules of their concern (procs, netns, wgconf, capture, lab); this module only gathers
them, so the tests keep one vocabulary while the package keeps one room per concern.
"""

from __future__ import annotations

from .capture import Capture, UdpPacket, captured_messages, parse_pcap, split_gso  # noqa: F401
from .lab import (  # noqa: F401
    BASE_PORT, PING_ARGS, ROOT, STANDIN, UPSTREAM_WGGO, WGGO_KIND, WGGO_KINDS, WGGO_UPSTREAM_KIND, WGPY_KIND, XFER,
    Lab, Topology, Transfer, WgNode, assert_ping, inner_addresses, lan_host, ping, start_mesh, upstream_wggo_problem,
    wggo_binary,
)
from .netns import (  # noqa: F401
    NETNS_DIR, NS_PREFIX, NS_RE, add_address, add_bridge, cleanup_stale_namespaces, create_netns, default_route,
    destroy_netns, kill_ns_processes, link_exists, link_json, link_stats, list_netns, nat_router, new_netns_name,
    nft_load, ns_pids, read_sysctl, sysctl,
)
from .procs import (  # noqa: F401
    CommandError, Proc, WaitTimeout, describe_command, kill_group, ns_exec, pid_alive, proc_status, run, wait_for,
)
from .wgconf import (  # noqa: F401
    UAPI_DIR, WGPY, WGPY_RUN_DIR, Keypair, PeerSpec, b64_of_length, format_endpoint, gen_keypair, gen_psk,
    latest_handshake, parse_size, parse_wg_dump, parse_wg_show, random_public_key, render_config, unique_iface,
    wg_dump, write_config,
)
