"""`wgpy up` / `wgpy down`: what wg-quick does, done by the daemon itself.

up (foreground):  load config -> checks (privilege, name free) -> resolve endpoints -> PreUp -> create TUN,
                  UDP and UAPI sockets -> configure the core through a UAPI set (the same path `wg` uses)
                  -> addresses, MTU, routes (netlink) -> Masquerade (nft, forwarding) -> DNS -> PostUp
                  -> [User =: drop to that user, keeping CAP_NET_ADMIN] -> ready -> event loop
Mode = tap:       a TAP device instead (the core switches Ethernet frames); its MTU is the tunnel MTU minus the
                  Ethernet header, addresses are optional (it may be enslaved to a bridge instead, e.g. in
                  PostUp), IPv6 addresses go through duplicate address detection as on any Ethernet link, and
                  there are no routes (peers have no AllowedIPs in L2).
teardown:         PreDown -> pid file removed -> DNS restored -> Masquerade table deleted, forwarding restored
                  -> rules removed, sysctls restored -> TUN closed (its addresses and routes go with it) ->
                  sockets closed -> PostDown
Every step of `up` pushes its undo onto the session's undo stack; teardown pops and runs them newest first, so a
failure anywhere in `up` (or a SIGTERM during it) undoes exactly the steps already done and nothing is left
behind. What the steps change on the host is also recorded in RUN_DIR/IFACE.state before it changes: a daemon
killed with SIGKILL is cleaned up after by `wgpy down` (or the next `wgpy up`).
In the background, `wgpy up` starts the same foreground process detached and waits for its readiness report.

Without CAP_NET_ADMIN, `up` attaches to a persistent TUN that root created for this user beforehand and checks
that root also configured what the file asks for (addresses, MTU, up, routes); it changes nothing outside its
own process and says which commands are missing otherwise (host/privileges.py, README "Without root").

    hooks.py      UpError; PreUp/PostUp/PreDown/PostDown commands
    preflight.py  checks that change nothing: name free, nft present, User =, attach mode's missing setup
    resolve.py    host names of endpoints to numeric addresses at up (looked up again later: io/reresolve.py)
    undo.py       UndoStack: what up did, as undos run newest first
    session.py    Session: the setup steps in order, each pushing its undo; teardown
    lifecycle.py  up_foreground (the daemon), up_background (start it detached, wait for READY)
    down.py       which process is the daemon of an interface, stopping it, refusing what is not wgpy's
    interrupt.py  SIGTERM/SIGINT from the first moment of up: undo during setup, stop once running
    recovery.py   the state file written before each host change; the cleanup after a daemon that died
"""

from .down import down
from .hooks import UpError
from .lifecycle import up_background, up_foreground

__all__ = ["UpError", "up_foreground", "up_background", "down"]
