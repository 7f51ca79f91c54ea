"""Linux TUN/TAP devices through /dev/net/tun (TUNSETIFF), as described in the kernel's tuntap.txt.

Packets are read and written without the 4-byte packet-information header (IFF_NO_PI): one read() returns one
IP packet (TUN) or Ethernet frame (TAP); a TUN opened with offloads puts a 10-byte virtio_net_hdr in front of
each (io/offload.py). The device disappears when its last file descriptor closes unless it
was made persistent beforehand (`ip tuntap add`), in which case we attach to it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from .offload import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUNSETOFFLOAD

TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000


class TunError(OSError):
    pass


def _node_denied() -> str:
    """Why opening /dev/net/tun was refused: its mode and owner (a capability does not open a file; only the
    node's permissions, or CAP_DAC_OVERRIDE as root has, do)."""
    import pwd
    try:
        st = os.stat("/dev/net/tun")
    except OSError:
        return "cannot open /dev/net/tun: permission denied"
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    mode = st.st_mode & 0o7777
    return (f"cannot open /dev/net/tun: permission denied: the device node is mode {mode:04o}, owned by {owner}, "
            f"and this user (uid {os.geteuid()}) may not read and write it; as root, `chmod 0666 /dev/net/tun` "
            f"(Debian's default) lets every user open it, or run wgpy as root")


class Tun:
    """A TUN or TAP device.  With `offload` (TUN only) reads and writes carry a virtio_net_hdr (`vnet`) and,
    when the kernel accepts TUNSETOFFLOAD, reads may return TCP super-packets (`tso`); see io/offload.py."""

    def __init__(self, name: str, mode: str = "tun", offload: bool = True) -> None:
        flags = (IFF_TAP if mode == "tap" else IFF_TUN) | IFF_NO_PI
        vnet = offload and mode == "tun"
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except PermissionError as e:
            raise TunError(e.errno, _node_denied()) from None
        except FileNotFoundError:
            raise TunError(errno.ENODEV, "/dev/net/tun is missing: load the tun module") from None
        try:
            try:
                res = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags | (IFF_VNET_HDR if vnet
                                                                                              else 0)))
            except OSError as e:
                if not vnet or e.errno != errno.EINVAL:
                    raise
                vnet = False                 # a kernel without IFF_VNET_HDR for TUN: plain packets
                res = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        except OSError as e:
            os.close(fd)
            if e.errno == errno.EPERM:
                raise TunError(e.errno, f"cannot create interface {name}: needs CAP_NET_ADMIN") from None
            if e.errno == errno.EBUSY:
                raise TunError(e.errno, f"interface {name} is already in use") from None
            if e.errno == errno.EINVAL:
                raise TunError(e.errno, f"interface {name} already exists and is not a free {mode} device") from None
            raise TunError(e.errno, f"cannot create interface {name}: {e.strerror}") from None
        self.fd = fd
        self.name = res[:16].rstrip(b"\x00").decode()
        self.mode = mode
        self.vnet = vnet
        self.tso = False
        if vnet:
            try:
                fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
                self.tso = True
            except OSError:
                pass                         # reads stay one packet each, still behind a virtio_net_hdr
        os.set_blocking(fd, False)

    def attached(self) -> bool:
        """False once the interface was deleted (in whatever namespace it lives now)."""
        try:
            fcntl.ioctl(self.fd, TUNGETIFF, bytes(18))
            return True
        except OSError as e:
            return e.errno not in (errno.EBADFD, errno.ENODEV, errno.EBADF)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
