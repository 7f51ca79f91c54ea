"""RateLimit / RateLimitBurst outside the core: the config file (errors name file, line and key), the UAPI set and
get, `wgpy reload`'s plan (a removed limit is turned off, an unchanged one not resent), SaveConfig, show, JSON."""

from __future__ import annotations

import pytest

from wgpy import config as cfgmod
from wgpy import crypto
from wgpy import show as wgshow
from wgpy.ops import saveconf, showjson
from wgpy.ops.reload import plan_reload
from wgpy.settings.render import to_uapi
from wgpy.uapi.plan import UapiError, parse_set

PRIV = crypto.clamp(bytes(range(32)))
PEER1 = crypto.public_from_private(crypto.clamp(b"\x11" * 32))
B64 = crypto.encode_key
PATH = "/etc/wireguard/wg0.conf"


def conf(peer_extra: str) -> str:
    return f"[Interface]\nPrivateKey = {B64(PRIV)}\n\n[Peer]\nPublicKey = {B64(PEER1)}\nAllowedIPs = 10.0.0.2/32\n" \
           + peer_extra


def test_config_renders_bits_and_bytes():
    cfg = cfgmod.parse(conf("RateLimit = 20mbit\nRateLimitBurst = 256k\n"), PATH)
    assert cfg.peers[0].rate_limit == 20_000_000 and cfg.peers[0].rate_limit_burst == 262_144
    body = to_uapi(cfg)
    assert "wgpy_rate_limit=20000000\n" in body and "wgpy_rate_limit_burst=262144\n" in body
    off = to_uapi(cfgmod.parse(conf("RateLimit = off\n"), PATH))
    assert "wgpy_rate_limit" not in off


@pytest.mark.parametrize("extra, line, key, words", [
    ("RateLimit = 20mbps\n", 7, "RateLimit", "write bits per second"),
    ("RateLimit = 20\n", 7, "RateLimit", "expected a number of bits per second with a unit"),
    ("RateLimit = 1bit\n", 7, "RateLimit", "out of range 8kbit..100gbit"),
    ("RateLimit = 1mbit\nRateLimitBurst = 10\n", 8, "RateLimitBurst", "out of range 1500.."),
    ("RateLimitBurst = 64k\n", 7, "RateLimitBurst", "only used with RateLimit"),
    ("RateLimit = off\nRateLimitBurst = 64k\n", 8, "RateLimitBurst", "only used with RateLimit"),
])
def test_config_errors_name_file_line_and_key(extra, line, key, words):
    with pytest.raises(cfgmod.ConfigError) as info:
        cfgmod.parse(conf(extra), PATH)
    e = info.value
    assert (e.path, e.line, e.key) == (PATH, line, key) and words in e.message, str(e)


def test_uapi_set_get_live():
    from test_settings_table import Host
    from wgpy.uapi.protocol import handle_get, handle_request
    host = Host(False)
    ok = "errno=0\n\n"
    assert handle_request(f"set=1\nprivate_key={PRIV.hex()}\npublic_key={PEER1.hex()}\n"
                          "wgpy_rate_limit=20000000\n", host) == ok
    peer = host.device.peers[PEER1]
    assert peer.limit.bits == 20_000_000 and peer.limit.burst_given is None and host.device.rate_limit.active == 1
    assert handle_request(f"set=1\npublic_key={PEER1.hex()}\nwgpy_rate_limit_burst=100000\n", host) == ok
    assert peer.limit.bits == 20_000_000 and peer.limit.burst == 100_000     # the burst alone keeps the rate
    _, peers = wgshow.parse_get(handle_get(host))
    assert (peers[0]["wgpy_rate_limit"], peers[0]["wgpy_rate_limit_burst"]) == ("20000000", "100000")
    assert handle_request(f"set=1\npublic_key={PEER1.hex()}\nwgpy_rate_limit=1000000\n", host) == ok
    assert peer.limit.bits == 1_000_000 and peer.limit.burst == 100_000     # the rate alone keeps the burst
    assert handle_request(f"set=1\npublic_key={PEER1.hex()}\nwgpy_rate_limit=0\n", host) == ok
    assert peer.limit is None and host.device.rate_limit.active == 0
    _, peers = wgshow.parse_get(handle_get(host))
    assert not [k for k in peers[0] if k.startswith("wgpy_rate")]
    host.streams.close()


def test_uapi_values_and_their_bounds():
    for bad in ("wgpy_rate_limit=abc", "wgpy_rate_limit=7999", "wgpy_rate_limit=100000000001",
                "wgpy_rate_limit_burst=1499", "wgpy_rate_limit_burst=x"):
        with pytest.raises(UapiError) as info:
            parse_set([f"public_key={PEER1.hex()}", bad], lambda s: None)
        assert info.value.code == -22
    plan = parse_set([f"public_key={PEER1.hex()}", "wgpy_rate_limit=0", "wgpy_rate_limit_burst=0"], lambda s: None)
    assert plan.peers[0].rate_limit == 0 and plan.peers[0].rate_limit_burst == 0


def test_plan_reload_turns_a_removed_limit_off_and_leaves_an_unchanged_one():
    key = PEER1.hex()
    cur = [{"public_key": key, "preshared_key": "0" * 64, "persistent_keepalive_interval": "0",
            "allowed_ips": ["10.0.0.2/32"], "wgpy_rate_limit": "20000000", "wgpy_rate_limit_burst": "262144",
            "wgpy_rate_limit_dropped": "5 0"}]
    dev = {"private_key": PRIV.hex()}
    same = to_uapi(cfgmod.parse(conf("RateLimit = 20mbit\nRateLimitBurst = 256k\n"), PATH))
    text, counts = plan_reload(same, dev, cur)
    assert counts["unchanged"] == 1 and "wgpy_rate_limit" not in text
    gone = to_uapi(cfgmod.parse(conf(""), PATH))
    text, counts = plan_reload(gone, dev, cur)
    assert counts["updated"] == 1
    assert "wgpy_rate_limit=0\n" in text and "wgpy_rate_limit_burst=0\n" in text
    rate_only = to_uapi(cfgmod.parse(conf("RateLimit = 10mbit\n"), PATH))
    text, counts = plan_reload(rate_only, dev, cur)
    assert counts["updated"] == 1 and "wgpy_rate_limit=10000000\n" in text and "wgpy_rate_limit_burst=0\n" in text
    cur[0].pop("wgpy_rate_limit_burst")                   # default burst, the file says the same rate
    text, counts = plan_reload(to_uapi(cfgmod.parse(conf("RateLimit = 20mbit\n"), PATH)), dev, cur)
    assert counts["unchanged"] == 1


def _get(extra: str) -> tuple[dict, list[dict]]:
    return wgshow.parse_get(f"private_key={PRIV.hex()}\nlisten_port=51820\npublic_key={PEER1.hex()}\n"
                            f"preshared_key={'00' * 32}\nallowed_ip=10.0.0.2/32\n{extra}errno=0\n")


def test_saveconf_writes_the_limit_back_and_it_reads_again():
    text = conf("RateLimit = 20mbit\n")
    cfg = cfgmod.parse(text, PATH)
    dev, peers = _get("wgpy_rate_limit=1500000\nwgpy_rate_limit_burst=262144\nwgpy_rate_limit_dropped=0 0\n")
    out = saveconf.render(cfg, text, dev, peers, [], 1420)
    assert "RateLimit = 1500kbit\nRateLimitBurst = 262144\n" in out
    again = cfgmod.parse(out, PATH)
    assert again.peers[0].rate_limit == 1_500_000 and again.peers[0].rate_limit_burst == 262_144


def test_show_and_json():
    dev, peers = _get("wgpy_rate_limit=20000000\nwgpy_rate_limit_dropped=12 3\n")
    obj = showjson.interface_object("wg0", dev, peers)
    assert obj["peers"][0]["rate_limit"] == {"bits_per_second": 20_000_000, "burst_bytes": 65536,
                                             "burst_default": True, "dropped_sent": 12, "dropped_received": 3}
    fields = {f.label: f for f in wgshow.FIELDS if f.label}
    text = fields["rate limit"].text(peers[0], None)
    assert text == "20 Mbit/s each way, burst 64.00 KiB (default); dropped 12 sent, 3 received"
    dev, peers = _get("")
    assert showjson.interface_object("wg0", dev, peers)["peers"][0]["rate_limit"] is None
