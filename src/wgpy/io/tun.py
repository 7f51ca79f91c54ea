"""Linux TUN/TAP devices through /dev/net/tun (TUNSETIFF), as described in the kernel's tuntap.txt.

Packets are read and written without the 4-byte packet-information header (IFF_NO_PI): one read() returns one
IP packet (TUN) or Ethernet frame (TAP). The device disappears when its last file descriptor closes unless it
was made persistent beforehand (`ip tuntap add`), in which case we attach to it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000


class TunError(OSError):
    pass


class Tun:
    def __init__(self, name: str, mode: str = "tun") -> None:
        flags = (IFF_TAP if mode == "tap" else IFF_TUN) | IFF_NO_PI
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except PermissionError:
            raise TunError(errno.EPERM, "cannot open /dev/net/tun: needs CAP_NET_ADMIN (run as root)") from None
        except FileNotFoundError:
            raise TunError(errno.ENODEV, "/dev/net/tun is missing: load the tun module") from None
        try:
            ifr = struct.pack("16sH", name.encode(), flags)
            res = fcntl.ioctl(fd, TUNSETIFF, ifr)
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
        os.set_blocking(fd, False)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
