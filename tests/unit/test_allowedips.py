import ipaddress
import random
import struct
import time

import pytest

from wgpy.routing.allowedips import AllowedIPs

N = ipaddress.ip_network
A = ipaddress.ip_address


class Peer:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Peer({self.name})"


def v4(s):
    return A(s).packed


def v6(s):
    return A(s).packed


def ipv4_packet(src, dst, payload=b"hello"):
    total = 20 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0x1234, 0, 64, 17, 0, v4(src), v4(dst))
    return hdr + payload


def ipv6_packet(src, dst, payload=b"hello v6"):
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(payload), 17, 64, v6(src), v6(dst))
    return hdr + payload


# ---------------------------------------------------------------------------------------------------- known cases


def test_empty_table():
    t = AllowedIPs()
    assert len(t) == 0
    assert t.lookup_v4(v4("1.2.3.4")) is None
    assert t.lookup_v6(v6("::1")) is None
    assert t.entries(Peer("x")) == []
    t.remove_by_peer(Peer("x"))
    assert t.remove(N("10.0.0.0/8"), Peer("x")) is False


def test_v4_longest_prefix():
    a, b, c, d = Peer("a"), Peer("b"), Peer("c"), Peer("d")
    t = AllowedIPs()
    t.insert(N("0.0.0.0/0"), a)
    t.insert(N("10.0.0.0/8"), b)
    t.insert(N("10.1.2.0/24"), c)
    t.insert(N("10.1.2.3/32"), d)
    assert len(t) == 4
    assert t.lookup_v4(v4("10.1.2.3")) is d
    assert t.lookup_v4(v4("10.1.2.4")) is c
    assert t.lookup_v4(v4("10.1.3.3")) is b
    assert t.lookup_v4(v4("11.1.2.3")) is a
    assert t.lookup_v4(v4("255.255.255.255")) is a
    assert t.lookup_v4(v4("0.0.0.0")) is a
    # the v6 side is independent
    assert t.lookup_v6(v6("::")) is None
    t.remove(N("0.0.0.0/0"), a)
    assert t.lookup_v4(v4("11.1.2.3")) is None
    assert t.lookup_v4(v4("10.200.0.1")) is b


def test_v6_longest_prefix():
    a, b, c = Peer("a"), Peer("b"), Peer("c")
    t = AllowedIPs()
    t.insert(N("::/0"), a)
    t.insert(N("fd00:1:2:3::/64"), b)
    t.insert(N("fd00:1:2:3::42/128"), c)
    assert t.lookup_v6(v6("fd00:1:2:3::42")) is c
    assert t.lookup_v6(v6("fd00:1:2:3::43")) is b
    assert t.lookup_v6(v6("fd00:1:2:3:ffff:ffff:ffff:ffff")) is b
    assert t.lookup_v6(v6("fd00:1:2:4::42")) is a
    assert t.lookup_v6(v6("::1")) is a
    assert t.lookup_v6(v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")) is a
    assert t.lookup_v4(v4("1.2.3.4")) is None


def test_host_bits_ignored():
    p = Peer("p")
    t = AllowedIPs()
    t.insert(N("10.1.2.99/24", strict=False), p)
    t.insert("192.168.7.7/16", p)  # strings are accepted with strict=False semantics
    t.insert(N("fd00::1234/64", strict=False), p)
    assert t.entries(p) == [N("10.1.2.0/24"), N("192.168.0.0/16"), N("fd00::/64")]
    assert t.lookup_v4(v4("10.1.2.1")) is p
    assert t.lookup_v4(v4("192.168.200.1")) is p
    assert t.lookup_v6(v6("fd00::ffff")) is p
    assert t.remove("10.1.2.5/24", p) is True
    assert t.lookup_v4(v4("10.1.2.1")) is None


def test_insert_replaces_owner():
    a, b = Peer("a"), Peer("b")
    t = AllowedIPs()
    t.insert(N("10.0.0.0/8"), a)
    t.insert(N("10.0.0.0/16"), a)
    t.insert(N("10.0.0.0/8"), b)
    assert len(t) == 2
    assert t.lookup_v4(v4("10.9.9.9")) is b
    assert t.lookup_v4(v4("10.0.9.9")) is a
    assert t.entries(a) == [N("10.0.0.0/16")]
    assert t.entries(b) == [N("10.0.0.0/8")]
    # the old owner can no longer remove it
    assert t.remove(N("10.0.0.0/8"), a) is False
    assert t.lookup_v4(v4("10.9.9.9")) is b
    # re-inserting for the same owner is a no-op
    t.insert(N("10.0.0.0/8"), b)
    assert len(t) == 2 and t.entries(b) == [N("10.0.0.0/8")]
    # after losing its last prefix a peer has no entries; removing it is harmless
    t.insert(N("10.0.0.0/16"), b)
    assert t.entries(a) == []
    t.remove_by_peer(a)
    assert len(t) == 2


def test_remove_wrong_peer_does_nothing():
    a, b = Peer("a"), Peer("b")
    t = AllowedIPs()
    t.insert(N("192.168.1.0/24"), a)
    assert t.remove(N("192.168.1.0/24"), b) is False
    assert t.remove(N("192.168.2.0/24"), a) is False  # not present
    assert t.remove(N("192.168.1.0/25"), a) is False  # same address, other length
    assert t.lookup_v4(v4("192.168.1.7")) is a
    assert len(t) == 1
    assert t.remove(N("192.168.1.0/24"), a) is True
    assert t.remove(N("192.168.1.0/24"), a) is False
    assert t.lookup_v4(v4("192.168.1.7")) is None
    assert len(t) == 0
    assert t.entries(a) == []


def test_remove_by_peer():
    a, b = Peer("a"), Peer("b")
    t = AllowedIPs()
    for net in ("10.0.0.0/8", "10.1.0.0/16", "fd00::/8", "0.0.0.0/0"):
        t.insert(N(net), a)
    t.insert(N("10.1.1.0/24"), b)
    t.insert(N("fd00:1::/32"), b)
    assert len(t) == 6
    t.remove_by_peer(a)
    assert len(t) == 2
    assert t.entries(a) == []
    assert t.lookup_v4(v4("10.1.1.1")) is b
    assert t.lookup_v4(v4("10.1.2.1")) is None
    assert t.lookup_v4(v4("8.8.8.8")) is None
    assert t.lookup_v6(v6("fd00:1::1")) is b
    assert t.lookup_v6(v6("fd00:2::1")) is None
    t.remove_by_peer(b)
    assert len(t) == 0
    t.remove_by_peer(b)  # idempotent


def _order(net):
    return (net.version, int(net.network_address), net.prefixlen)


def test_entries_in_insertion_order():
    p = Peer("p")
    t = AllowedIPs()
    nets = ["fd00::/64", "10.0.0.0/16", "::/0", "10.0.0.0/8", "9.0.0.0/8", "10.0.0.0/24", "fc00::/7", "0.0.0.0/0"]
    for net in nets:
        t.insert(N(net), p)
    # as wireguard-go reports them (and `wg showconf` prints them): in the order they were added
    assert [str(n) for n in t.entries(p)] == nets


def test_clear():
    p = Peer("p")
    t = AllowedIPs()
    t.insert(N("0.0.0.0/0"), p)
    t.insert(N("::/0"), p)
    t.clear()
    assert len(t) == 0
    assert t.entries(p) == []
    assert t.lookup_v4(v4("1.1.1.1")) is None
    assert t.lookup_v6(v6("::1")) is None


def test_peers_are_arbitrary_hashables():
    t = AllowedIPs()
    t.insert(N("10.0.0.0/8"), "peer-a")
    t.insert(N("11.0.0.0/8"), 7)
    t.insert(N("12.0.0.0/8"), ("k", 1))
    assert t.lookup_v4(v4("10.0.0.1")) == "peer-a"
    assert t.lookup_v4(v4("11.0.0.1")) == 7
    assert t.lookup_v4(v4("12.0.0.1")) == ("k", 1)
    with pytest.raises(ValueError):
        t.insert(N("13.0.0.0/8"), None)


# ---------------------------------------------------------------------------------------------------- packets


@pytest.fixture
def routed():
    a, b, c, d = Peer("a"), Peer("b"), Peer("c"), Peer("d")
    t = AllowedIPs()
    t.insert(N("10.0.0.0/24"), a)
    t.insert(N("192.168.0.0/16"), b)
    t.insert(N("fd00:a::/64"), c)
    t.insert(N("fd00:b::1/128"), d)
    return t, a, b, c, d


def test_lookup_dst_src_ipv4(routed):
    t, a, b, c, d = routed
    pkt = ipv4_packet("10.0.0.5", "192.168.3.4")
    assert t.lookup_dst(pkt) is b
    assert t.lookup_src(pkt) is a
    assert t.lookup_dst(memoryview(pkt)) is b
    assert t.lookup_src(bytearray(pkt)) is a
    assert t.lookup_dst(ipv4_packet("10.0.0.5", "8.8.8.8")) is None
    # a bare 20-byte header is enough
    assert t.lookup_dst(ipv4_packet("10.0.0.5", "192.168.3.4", b"")) is b


def test_lookup_dst_src_ipv6(routed):
    t, a, b, c, d = routed
    pkt = ipv6_packet("fd00:b::1", "fd00:a::99")
    assert t.lookup_dst(pkt) is c
    assert t.lookup_src(pkt) is d
    assert t.lookup_dst(memoryview(pkt)) is c
    assert t.lookup_src(memoryview(pkt)[:40]) is d
    assert t.lookup_src(ipv6_packet("fd00:b::2", "fd00:a::99")) is None


def test_lookup_packets_garbage(routed):
    t, a, b, c, d = routed
    v4pkt = ipv4_packet("10.0.0.5", "192.168.3.4")
    v6pkt = ipv6_packet("fd00:b::1", "fd00:a::99")
    bad = [
        b"",
        b"\x45",
        v4pkt[:19],
        v6pkt[:39],
        v6pkt[:20],  # long enough for IPv4 but not for IPv6
        b"\x00" * 60,  # version 0
        b"\x55" + v4pkt[1:],  # version 5
        b"\x65" + v4pkt[1:19],  # claims v6, too short
        b"\xff" * 100,
        memoryview(b""),
    ]
    for pkt in bad:
        assert t.lookup_dst(pkt) is None, pkt
        assert t.lookup_src(pkt) is None, pkt
    # a v6-looking packet >= 40 bytes is looked up as IPv6 regardless of content
    t.insert(N("::/0"), a)
    assert t.lookup_dst(b"\x60" + b"\x00" * 39) is a


# ---------------------------------------------------------------------------------------------------- differential


class NaiveTable:
    """Deliberately simple reference: a list scanned for the longest matching prefix."""

    def __init__(self):
        self.items = []  # [(network, peer)]

    def insert(self, net, peer):
        self.items = [(n, p) for n, p in self.items if n != net]
        self.items.append((net, peer))

    def remove(self, net, peer):
        before = len(self.items)
        self.items = [(n, p) for n, p in self.items if not (n == net and p is peer)]
        return len(self.items) != before

    def remove_by_peer(self, peer):
        self.items = [(n, p) for n, p in self.items if p is not peer]

    def lookup(self, addr):
        best = None
        for n, p in self.items:
            if n.version == addr.version and addr in n and (best is None or n.prefixlen > best[0].prefixlen):
                best = (n, p)
        return best[1] if best else None

    def frozen_lookup(self):
        """Same answers as lookup() for the current contents, scanning per-family lists longest prefix first."""
        lists = {v: sorted(((n, p) for n, p in self.items if n.version == v), key=lambda item: -item[0].prefixlen)
                 for v in (4, 6)}

        def lookup(addr):
            for n, p in lists[addr.version]:
                if addr in n:
                    return p
            return None

        return lookup

    def entries(self, peer):
        return sorted((n for n, p in self.items if p is peer),
                      key=lambda n: (n.version, int(n.network_address), n.prefixlen))


def _random_net(rng, version):
    width = 32 if version == 4 else 128
    # favour a few "interesting" lengths so prefixes nest, but cover the whole range
    if rng.random() < 0.5:
        plen = rng.choice([0, 8, 16, 24, 32] if version == 4 else [0, 16, 32, 48, 64, 96, 128])
        plen = min(plen, width)
    else:
        plen = rng.randint(0, width)
    # draw addresses from a small pool of "sites" so that prefixes overlap a lot
    site = rng.randrange(4)
    top = {4: [10, 172, 192, 100], 6: [0xFD00, 0x2001, 0xFE80, 0xFC00]}[version][site]
    if version == 4:
        addr = (top << 24) | rng.getrandbits(24) if rng.random() < 0.9 else rng.getrandbits(32)
        return ipaddress.IPv4Network((addr, plen), strict=False)
    addr = (top << 112) | rng.getrandbits(112) if rng.random() < 0.9 else rng.getrandbits(128)
    return ipaddress.IPv6Network((addr, plen), strict=False)


def _random_addr_in(rng, net):
    host_bits = net.max_prefixlen - net.prefixlen
    # (not ip_address(int): small ints would come back as IPv4 even for an IPv6 network)
    return type(net.network_address)(int(net.network_address) | (rng.getrandbits(host_bits) if host_bits else 0))


@pytest.mark.parametrize("seed", [1, 2])
def test_differential_against_naive(seed):
    rng = random.Random(seed)
    peers = [Peer(i) for i in range(7)]
    fast, ref = AllowedIPs(), NaiveTable()
    inserted = []
    for _ in range(2000):
        r = rng.random()
        if r < 0.08 and inserted:
            # re-insert an existing prefix for a (probably) different peer: replacement
            net = rng.choice(inserted)
            peer = rng.choice(peers)
            fast.insert(net, peer)
            ref.insert(net, peer)
        elif r < 0.16 and inserted:
            # remove with a random peer (often the wrong one)
            net = rng.choice(inserted)
            peer = rng.choice(peers)
            assert fast.remove(net, peer) == ref.remove(net, peer)
        else:
            net = _random_net(rng, 4 if rng.random() < 0.5 else 6)
            peer = rng.choice(peers)
            # sometimes pass a non-normalised string to exercise host-bit masking
            if rng.random() < 0.1:
                host = _random_addr_in(rng, net)
                fast.insert(f"{host}/{net.prefixlen}", peer)
            else:
                fast.insert(net, peer)
            ref.insert(net, peer)
            inserted.append(net)
    gone = rng.choice(peers)
    fast.remove_by_peer(gone)
    ref.remove_by_peer(gone)

    assert len(fast) == len(ref.items)
    for p in peers:
        assert sorted(fast.entries(p), key=_order) == sorted(ref.entries(p), key=_order)

    live = [n for n, _ in ref.items]
    by_version = {4: [n for n in live if n.version == 4], 6: [n for n in live if n.version == 6]}

    def compare_lookups(count):
        ref_lookup = ref.frozen_lookup()
        for _ in range(100):  # the frozen scan agrees with the plain one
            addr = _random_addr_in(rng, rng.choice(live))
            assert ref_lookup(addr) is ref.lookup(addr)
        hits = 0
        for version in (4, 6):
            pool = [n for n in inserted if n.version == version]
            for _ in range(count // 2):
                if rng.random() < 0.7:
                    addr = _random_addr_in(rng, rng.choice(pool))
                else:
                    # near (or far from) the sites, often outside every inserted prefix
                    base = _random_net(rng, version).network_address
                    addr = type(base)(int(base) ^ rng.getrandbits(8))
                assert addr.version == version
                expected = ref_lookup(addr)
                got = fast.lookup_v4(addr.packed) if version == 4 else fast.lookup_v6(addr.packed)
                assert got is expected, (addr, got, expected)
                hits += expected is not None
        return hits

    # 1) full table: short prefixes (down to /0) cover almost everything
    hits = compare_lookups(10_000)
    assert hits > 9_000
    # 2) drop the short prefixes (through remove(), by their owner) so that many lookups miss
    for net, peer in list(ref.items):
        if net.prefixlen < (12 if net.version == 4 else 20):
            assert fast.remove(net, peer) is True
            assert ref.remove(net, peer) is True
    assert len(fast) == len(ref.items)
    hits = compare_lookups(10_000)
    assert 2_000 < hits < 9_000, hits

    # the packet-level lookups agree with the address-level ones
    live = [n for n, _ in ref.items]
    by_version = {4: [n for n in live if n.version == 4], 6: [n for n in live if n.version == 6]}
    for _ in range(500):
        net = rng.choice(live)
        src = _random_addr_in(rng, rng.choice(by_version[net.version]))
        dst = _random_addr_in(rng, net)
        if net.version == 4:
            pkt = ipv4_packet(str(src), str(dst))
            assert fast.lookup_src(pkt) is fast.lookup_v4(src.packed)
            assert fast.lookup_dst(pkt) is fast.lookup_v4(dst.packed) is ref.lookup(dst)
        else:
            pkt = ipv6_packet(str(src), str(dst))
            assert fast.lookup_src(pkt) is fast.lookup_v6(src.packed)
            assert fast.lookup_dst(pkt) is fast.lookup_v6(dst.packed) is ref.lookup(dst)

    # tearing everything down leaves an empty table
    for p in peers:
        fast.remove_by_peer(p)
    assert len(fast) == 0
    assert fast.lookup_v4(b"\x0a\x00\x00\x01") is None
    assert fast.lookup_v6(bytes(16)) is None


# ---------------------------------------------------------------------------------------------------- scale


def test_insert_100k_is_fast():
    rng = random.Random(42)
    peers = [Peer(i) for i in range(100)]
    nets = []
    for i in range(100_000):
        if i % 2:
            nets.append(ipaddress.IPv4Network((rng.getrandbits(32), rng.randint(8, 32)), strict=False))
        else:
            nets.append(ipaddress.IPv6Network((rng.getrandbits(128), rng.randint(16, 128)), strict=False))
    t = AllowedIPs()
    start = time.perf_counter()
    for i, net in enumerate(nets):
        t.insert(net, peers[i % 100])
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, elapsed
    assert len(t) == len(set(nets))
    # spot-check
    for net in nets[-50:]:
        owner = t.lookup_v4(net.network_address.packed) if net.version == 4 else t.lookup_v6(net.network_address.packed)
        assert owner is not None
    start = time.perf_counter()
    for p in peers:
        t.remove_by_peer(p)
    assert time.perf_counter() - start < 5.0
    assert len(t) == 0
