"""The mesh control plane in namespaces (issue 17): a server namespace and four node namespaces on a bridge.

Nodes join with tokens (`wgpy join`), reach each other by their assigned addresses (ping, 20 MB intact); a fifth
node joins and the others reach it within 2 s, no config edited; `wgpy server nodes remove` cuts it off
everywhere within 2 s; a policy that only lets laptops reach laptops and servers reach servers leaves no session
between a laptop and a server while the other pairs keep working; the server is killed and traffic goes on, it
restarts and a change propagates again. On PostgreSQL: two server instances, one killed; joins and changes go on
through the other and the nodes fail over without losing a tunnel.
"""

from __future__ import annotations

import json
import time

import pytest

from wgpy_testkit import netlab
from wgpy_testkit.netlab import run, wait_for
from wgpy_testkit.wgconf import unique_iface

pytestmark = pytest.mark.netns

SERVER_IP = "10.203.0.1"
SERVER2_IP = "10.203.0.6"          # the second instance (PostgreSQL test), in the namespace of node 5
PORT = 8443


class Node:
    def __init__(self, ns: str, name: str, iface: str, state: str) -> None:
        self.ns, self.name, self.iface, self.state = ns, name, iface, state
        self.addresses: list[str] = []
        self.public_key = ""

    def args(self) -> list[str]:
        return ["--interface", self.iface, "--state-dir", self.state]


@pytest.fixture
def mesh_lab(lab):
    switch = lab.netns()
    run(switch, "ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
    run(switch, "ip", "link", "set", "br0", "up")
    nss = []
    for i in range(6):                    # 0: the server, 1-5: nodes
        ns = lab.netns()
        _, v_switch = lab.veth(ns, switch, f"10.203.0.{i + 1}/24", None)
        run(switch, "ip", "link", "set", v_switch, "master", "br0", "up")
        nss.append(ns)
    cert, key = lab.tmp / "server.pem", lab.tmp / "server.key"
    run(None, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=mesh.test", "-addext",
        f"subjectAltName=IP:{SERVER_IP},IP:{SERVER2_IP}", timeout=30)
    (lab.tmp / "pw").write_text("correct horse battery\n")
    conf = lab.tmp / "server.toml"
    nodes: list[Node] = []

    def cleanup() -> None:
        for n in nodes:
            lab.wgpy(n.ns, "leave", "--force", *n.args(), timeout=30)
    lab.defer("mesh nodes leave", cleanup)
    return {"lab": lab, "ns": nss, "cert": cert, "key": key, "conf": conf, "nodes": nodes}


def init(m, db: str | None = None, urls=()) -> None:
    lab = m["lab"]
    extra = [a for u in urls for a in ("--url", u)]
    res = lab.wgpy(None, "server", "--config", m["conf"], "init", "--network", "100.80.0.0/16", "--network",
                   "fd7a:6770::/48", "--db", db or f"sqlite:///{lab.tmp}/server.db", "--admin-password-file",
                   lab.tmp / "pw", *extra)
    assert res.returncode == 0, res.stderr


def start_server(m, ns_index: int = 0):
    lab = m["lab"]
    ns = m["ns"][ns_index]
    proc = lab.popen(ns, netlab.WGPY, "server", "--config", m["conf"], "run", "--listen",
                     f"0.0.0.0:{PORT}", "--cert", m["cert"], "--key", m["key"], name="wgpy-server")
    wait_for(lambda: f":{PORT} " in run(ns, "ss", "-ltn", timeout=5).stdout or not proc.alive(), 15,
             what="wgpy server listening")
    assert proc.alive(), proc.describe()
    return proc


def admin(m, *args) -> str:
    res = m["lab"].wgpy(None, "server", "--config", m["conf"], *args, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def join(m, i: int, token: str, name: str, server: str = SERVER_IP) -> Node:
    lab = m["lab"]
    node = Node(m["ns"][i], name, unique_iface("wgm"), str(lab.tmp / f"state{i}"))
    m["nodes"].append(node)
    res = lab.wgpy(node.ns, "join", f"https://{server}:{PORT}", "--token", token, "--name", name, "--ca",
                   m["cert"], *node.args(), timeout=60)
    assert res.returncode == 0, res.stderr
    st = json.loads(lab.wgpy(node.ns, "status", "--json", *node.args(), check=True).stdout)
    me = [r for r in st["nodes"] if r["self"]][0]
    node.addresses = me["addresses"]
    node.public_key = json.loads((lab.tmp / f"state{i}" / f"{node.iface}.json").read_text())["public_key"]
    return node


def peer_keys(node: Node) -> set[str]:
    out = run(node.ns, "wg", "show", node.iface, "peers", timeout=10).stdout.split()
    return set(out)


def pings(a: Node, b: Node) -> bool:
    return run(a.ns, "ping", "-c", "1", "-W", "1", b.addresses[0], timeout=10, check=False).returncode == 0


def test_mesh_join_reach_remove_policy_and_outage(mesh_lab):
    m = mesh_lab
    lab = m["lab"]
    init(m)
    server = start_server(m)
    token = admin(m, "token", "create", "--reusable", "--expires", "1h")
    nodes = [join(m, i, token, f"node{i}") for i in range(1, 5)]
    assert len({n.addresses[0] for n in nodes}) == 4 and all(n.addresses[0].startswith("100.80.") for n in nodes)
    for a in nodes:                                  # every node has every other as a peer, and reaches it
        wait_for(lambda a=a: peer_keys(a) == {n.public_key for n in nodes if n is not a}, 5,
                 what=f"{a.name}'s peers")
    for a in nodes:
        for b in nodes:
            if a is not b:
                netlab.assert_ping(a.ns, b.addresses[0])
    got, sent = lab.transfer(nodes[1].ns, nodes[0].ns, nodes[1].addresses[0], 20 * 1024 * 1024)
    assert got["bytes"] == sent["bytes"] == 20 * 1024 * 1024 and got["sha256"] == sent["sha256"]
    netlab.assert_ping(nodes[0].ns, nodes[3].addresses[1])          # IPv6 addresses too

    # a fifth node: the others have it within 2 s, nothing edited
    t0 = time.monotonic()
    fifth = join(m, 5, token, "node5")
    wait_for(lambda: all(fifth.public_key in peer_keys(n) for n in nodes), 2.0, interval=0.05,
             what="the fifth node at every other node")
    print(f"fifth node at every node {time.monotonic() - t0:.2f} s after its join started")
    netlab.assert_ping(nodes[0].ns, fifth.addresses[0])
    status = json.loads(lab.wgpy(nodes[0].ns, "status", "--json", *nodes[0].args(), check=True).stdout)
    assert {r["name"] for r in status["nodes"]} == {"node1", "node2", "node3", "node4", "node5"}
    assert status["server_reached"] and all(r["online"] for r in status["nodes"])     # asked of the server
    text = lab.wgpy(nodes[0].ns, "status", *nodes[0].args(), check=True).stdout
    assert "node5" in text and "online" in text and fifth.addresses[0] in text

    # removed by the admin: gone everywhere within 2 s; its own interface is taken down
    t0 = time.monotonic()
    admin(m, "nodes", "remove", "node5")
    wait_for(lambda: all(fifth.public_key not in peer_keys(n) for n in nodes), 2.0, interval=0.05,
             what="the removed node gone everywhere")
    print(f"removal everywhere in {time.monotonic() - t0:.2f} s")
    wait_for(lambda: not netlab.link_exists(fifth.ns, fifth.iface), 10, what="the removed node's interface down")
    assert not pings(nodes[0], fifth)

    # policy: laptops reach laptops, servers reach servers; no laptop-server pair has a session
    for n, tag in zip(nodes, ("laptops", "laptops", "servers", "servers")):
        admin(m, "nodes", "tag", n.name, tag)
    policy = lab.tmp / "policy.json"
    policy.write_text(json.dumps({"rules": [{"from": ["laptops"], "to": ["laptops"]},
                                            {"from": ["servers"], "to": ["servers"]}]}))
    admin(m, "policy", "set", policy)
    wait_for(lambda: peer_keys(nodes[0]) == {nodes[1].public_key}
             and peer_keys(nodes[2]) == {nodes[3].public_key}, 2.0, interval=0.05, what="the policy applied")
    assert not pings(nodes[0], nodes[2])
    netlab.assert_ping(nodes[0].ns, nodes[1].addresses[0])
    netlab.assert_ping(nodes[2].ns, nodes[3].addresses[0])

    # the server goes away: the tunnels do not care
    server.signal(9)
    server.wait(10)
    for _ in range(3):
        netlab.assert_ping(nodes[0].ns, nodes[1].addresses[0])
        netlab.assert_ping(nodes[3].ns, nodes[2].addresses[0])
    assert peer_keys(nodes[0]) == {nodes[1].public_key}
    # back: a change made while it was down propagates
    admin(m, "nodes", "tag", nodes[2].name, "laptops")           # node3 becomes a laptop
    start_server(m)
    wait_for(lambda: peer_keys(nodes[0]) == {nodes[1].public_key, nodes[2].public_key}, 45, interval=0.2,
             what="the change after the restart (the agents reconnect with backoff)")
    netlab.assert_ping(nodes[0].ns, nodes[2].addresses[0])

    # leave: deregistered, interface down, the others lose it
    res = lab.wgpy(nodes[1].ns, "leave", *nodes[1].args(), timeout=30)
    assert res.returncode == 0, res.stderr
    assert not netlab.link_exists(nodes[1].ns, nodes[1].iface)
    wait_for(lambda: nodes[1].public_key not in peer_keys(nodes[0]), 2.0, interval=0.05, what="the leaver gone")
    assert "node2" not in admin(m, "nodes", "list")

    # a plain WireGuard client (Debian's wireguard-go) with the device config the server made, through node1
    png = lab.tmp / "phone.png"
    conf = admin(m, "devices", "add", "phone", "--gateway", "node1", "--png", png) + "\n"
    cfg = {}
    for line in conf.splitlines():
        k, _, v = line.partition(" = ")
        cfg.setdefault(k, v)
    assert cfg["Endpoint"] == f"10.203.0.2:51820" and cfg["PublicKey"] == nodes[0].public_key
    assert cfg["AllowedIPs"] == "100.80.0.0/16, fd7a:6770::/48"
    import shutil
    import subprocess
    if shutil.which("zbarimg"):                       # the QR code holds exactly the config
        decoded = subprocess.run(["zbarimg", "--raw", "-q", "-Sbinary", str(png)], capture_output=True, timeout=30)
        assert decoded.returncode == 0 and decoded.stdout.rstrip(b"\n") == conf.rstrip("\n").encode()
    phone_ns = m["ns"][5]
    phone_addrs = [a.strip() for a in cfg["Address"].split(",")]
    lab.wireguard_go_up(phone_ns, unique_iface("wgd"), cfg["PrivateKey"], None,
                        [netlab.PeerSpec(cfg["PublicKey"], tuple(a.strip() for a in cfg["AllowedIPs"].split(",")),
                                         endpoint=cfg["Endpoint"], persistent_keepalive=25)], phone_addrs)
    phone_ip = phone_addrs[0].split("/")[0]
    wait_for(lambda: run(nodes[2].ns, "ping", "-c", "1", "-W", "1", phone_ip, timeout=10, check=False).returncode == 0,
             15, what="node3 reaching the device through its gateway node1")
    assert run(phone_ns, "ping", "-c", "2", "-W", "2", nodes[2].addresses[0], timeout=15, check=False).returncode == 0
    db = b"".join(f.read_bytes() for f in lab.tmp.glob("server.db*"))    # the database and its WAL
    assert cfg["PublicKey"].encode() in db and cfg["PrivateKey"].encode() not in db     # shown once only
    admin(m, "devices", "remove", "phone")
    wait_for(lambda: run(nodes[0].ns, "wg", "show", nodes[0].iface, "allowed-ips", timeout=10).stdout.count(
        phone_ip) == 0, 2.0, interval=0.05, what="the device gone from its gateway")


def test_two_servers_on_one_postgresql_fail_over(mesh_lab):
    from wgpy_testkit.postgres import PgCluster, pg_bin
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (scripts/setup.sh installs Debian's postgresql)")
    m = mesh_lab
    lab = m["lab"]
    pg = PgCluster().start()
    lab.defer("the private PostgreSQL cluster", pg.stop)
    init(m, pg.url, [f"https://{SERVER_IP}:{PORT}", f"https://{SERVER2_IP}:{PORT}"])
    a = start_server(m, 0)
    start_server(m, 5)                       # the second instance, on the same database
    token = admin(m, "token", "create", "--reusable")
    n1 = join(m, 1, token, "n1", SERVER_IP)
    n2 = join(m, 2, token, "n2", SERVER2_IP)
    n3 = join(m, 3, token, "n3", SERVER_IP)
    nodes = [n1, n2, n3]
    for x in nodes:                          # joins at either instance reach the nodes of both
        wait_for(lambda x=x: peer_keys(x) == {n.public_key for n in nodes if n is not x}, 5, what=f"{x.name}")
    state = json.loads((lab.tmp / "state1" / f"{n1.iface}.json").read_text())
    assert state["servers"] == [f"https://{SERVER_IP}:{PORT}", f"https://{SERVER2_IP}:{PORT}"]
    netlab.assert_ping(n1.ns, n3.addresses[0])

    a.signal(9)                              # the first instance dies; n1 and n3 were connected to it
    a.wait(10)
    netlab.assert_ping(n1.ns, n3.addresses[0])
    n4 = join(m, 4, token, "n4", SERVER2_IP)
    t0 = time.monotonic()
    wait_for(lambda: all(n4.public_key in peer_keys(x) for x in nodes), 10, interval=0.1,
             what="the new node at every node, through the second instance")
    print(f"after the failover: the new node everywhere {time.monotonic() - t0:.2f} s after its join")
    admin(m, "nodes", "remove", "n2")
    wait_for(lambda: all(n2.public_key not in peer_keys(x) for x in (n1, n3, n4)), 2.0, interval=0.05,
             what="the removal through the second instance")
    for x, y in ((n1, n3), (n3, n4), (n4, n1)):
        netlab.assert_ping(x.ns, y.addresses[0])


def test_web_admin_in_headless_chromium(mesh_lab):
    """The web admin in a real browser (Debian's chromium, headless, driven by chromedriver through selenium),
    in the server's namespace: sign in, create a token, see the node that joins with it come online, add a
    device and decode the QR code on the page (it holds exactly the config shown), remove the node (its
    interface goes down), sign out. WGPY_SCREENSHOTS=DIR keeps screenshots of the pages (docs/img/)."""
    import os
    import shutil
    import subprocess
    from pyroute2 import netns as pyroute2_netns
    for tool in ("chromium", "chromedriver", "zbarimg"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/setup.sh (chromium, chromium-driver, zbar-tools)")
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    m = mesh_lab
    lab = m["lab"]
    init(m)
    start_server(m)
    shots = os.environ.get("WGPY_SCREENSHOTS")
    base = f"https://{SERVER_IP}:{PORT}"

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={lab.tmp / 'chromium'}", "--window-size=1280,860", "--no-first-run"):
        opts.add_argument(arg)
    opts.accept_insecure_certs = True          # the test's self-signed server certificate
    opts.binary_location = shutil.which("chromium")
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"),
                                      log_output=str(lab.tmp / "chromedriver.log"))
    pyroute2_netns.pushns(m["ns"][0])          # this thread (and the driver it starts) in the server's namespace
    driver = None
    try:
        driver = webdriver.Chrome(options=opts, service=service)
        driver.set_page_load_timeout(30)

        def shot(name: str) -> None:
            if shots:
                os.makedirs(shots, exist_ok=True)
                driver.save_screenshot(os.path.join(shots, f"web-admin-{name}.png"))

        def by_id(i: str):
            return driver.find_element(By.ID, i)

        def click(element) -> None:
            """Click something that loads a page, and wait for the new page (a click does not wait for it).
            `element` is the element, or a CSS selector found again should the page change under the click."""
            for attempt in range(3):
                old = driver.find_element(By.TAG_NAME, "html")
                try:
                    (driver.find_element(By.CSS_SELECTOR, element) if isinstance(element, str) else element).click()
                    break
                except WebDriverException:
                    if attempt == 2 or not isinstance(element, str):
                        raise
                    time.sleep(0.2)

            def replaced(_) -> bool:      # (chromedriver reports a replaced page's node as stale, or as foreign)
                try:
                    old.tag_name
                    return False
                except WebDriverException:
                    return True
            WebDriverWait(driver, 10).until(replaced)
            WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")

        driver.get(base + "/")
        assert driver.current_url == base + "/admin/login"
        by_id("password").send_keys("not the password")
        click("#signin")
        assert "Wrong password" in by_id("error").text
        by_id("password").send_keys("correct horse battery")
        click("#signin")
        assert driver.current_url == base + "/admin/nodes", driver.page_source[:2000]
        cookie = driver.get_cookie("wgpy_session")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"

        click("#nav-tokens")
        by_id("token-tags").send_keys("laptops")
        by_id("token-reusable").click()
        click("#token-create")
        token = by_id("new-token").text.strip()
        assert token.startswith("wgpy_")
        shot("tokens")

        node1 = join(m, 1, token, "node1")       # a real node joins with the token from the page
        node2 = join(m, 2, token, "node2")
        click("#nav-nodes")

        def online(name: str) -> bool:
            driver.refresh()
            rows = driver.find_elements(By.CSS_SELECTOR, f'tr[data-node="{name}"] .state')
            return bool(rows) and rows[0].text == "online"
        wait_for(lambda: online("node1") and online("node2"), 10, interval=0.3, what="node1 online in the page")
        row = driver.find_element(By.CSS_SELECTOR, 'tr[data-node="node1"]')
        assert node1.addresses[0] in row.text and "laptops" in row.get_attribute("innerHTML")
        shot("nodes")

        click("#nav-devices")
        by_id("device-name").send_keys("phone")
        Select(by_id("device-gateway")).select_by_visible_text("node2")
        click("#device-add")
        config = by_id("device-config").text
        assert "PrivateKey = " in config and f"PublicKey = {node2.public_key}" in config
        png = lab.tmp / "qr-from-page.png"
        png.write_bytes(by_id("qr").screenshot_as_png)
        decoded = subprocess.run(["zbarimg", "--raw", "-q", "-Sbinary", str(png)], capture_output=True, timeout=30)
        assert decoded.returncode == 0, decoded.stderr
        assert decoded.stdout.decode().strip() == config.strip()       # what the phone app would import
        driver.get(base + "/admin/devices")                             # listed; the key is not shown again
        assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-device="phone"]')
        assert "PrivateKey" not in driver.page_source and config.split()[3] not in driver.page_source

        # revoke node1 from the page: its agent is told, its interface goes, the others lose the peer
        driver.get(base + "/admin/nodes")
        click('tr[data-node="node1"] button.danger')
        assert "removed node1" in by_id("message").text
        assert not driver.find_elements(By.CSS_SELECTOR, 'tr[data-node="node1"]')
        wait_for(lambda: node1.public_key not in peer_keys(node2), 2.0, interval=0.05, what="node1 gone at node2")
        wait_for(lambda: not netlab.link_exists(node1.ns, node1.iface), 10, what="node1's interface down")

        click("#logout")
        assert driver.current_url == base + "/admin/login"
        driver.get(base + "/admin/tokens")
        assert driver.current_url == base + "/admin/login"           # the session is gone at the server
    except Exception:
        if driver is not None:
            driver.save_screenshot(str(lab.tmp / "failure.png"))
            print(f"screenshot of the failure: {lab.tmp / 'failure.png'}")
        raise
    finally:
        if driver is not None:
            driver.quit()
        pyroute2_netns.popns()


def test_prometheus_scrapes_the_mesh_server(mesh_lab):
    """A real Prometheus (Debian's) scrapes the server's /metrics over HTTPS (the test's CA as tls_config):
    the node count, online nodes, joins and view updates follow two real joins and a removal; promtool finds
    nothing wrong in the exposition; no node name or key is in it."""
    import shutil
    import sys
    import urllib.parse
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        pytest.fail("prometheus/promtool are not installed: run scripts/setup.sh (Debian package prometheus)")
    m = mesh_lab
    lab = m["lab"]
    init(m)
    start_server(m)
    ns = m["ns"][0]
    token = admin(m, "token", "create", "--reusable")
    a, b = join(m, 1, token, "alpha"), join(m, 2, token, "beta")
    wait_for(lambda: peer_keys(a) == {b.public_key}, 5, what="alpha's peer")
    prom_dir = lab.tmp / "prometheus"
    prom_dir.mkdir()
    pport = 19091
    (prom_dir / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
        "scrape_configs:\n  - job_name: wgpy-mesh\n    scheme: https\n"
        f"    tls_config:\n      ca_file: {m['cert']}\n"
        f"    static_configs:\n      - targets: ['{SERVER_IP}:{PORT}']\n")
    prom = lab.popen(ns, "prometheus", f"--config.file={prom_dir / 'prometheus.yml'}",
                     f"--storage.tsdb.path={prom_dir / 'data'}", f"--web.listen-address=127.0.0.1:{pport}",
                     "--log.level=warn", name="prometheus")
    get = ("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5)"
           ".read().decode())")

    def value(q: str) -> float | None:
        assert prom.alive(), prom.describe()
        url = f"http://127.0.0.1:{pport}/api/v1/query?query={urllib.parse.quote(q)}"
        res = run(ns, sys.executable, "-c", get, url, timeout=10, check=False)
        if res.returncode != 0:
            return None
        result = json.loads(res.stdout)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    wait_for(lambda: value('up{job="wgpy-mesh"}') == 1.0, 60, interval=0.5, what="Prometheus scraping the server")
    wait_for(lambda: value("wgpy_mesh_nodes") == 2 and value("wgpy_mesh_nodes_online") == 2, 10, interval=0.5,
             what="two nodes, both online, in Prometheus")
    assert value("wgpy_mesh_joins_total") == 2
    assert value("wgpy_mesh_view_updates_total") >= 1                    # beta's join pushed to alpha
    assert value("wgpy_mesh_view_update_latency_seconds_count") >= 2
    admin(m, "nodes", "remove", "beta")
    wait_for(lambda: value("wgpy_mesh_nodes") == 1 and value("wgpy_mesh_nodes_online") == 1, 10, interval=0.5,
             what="the removal in Prometheus")
    text = run(ns, sys.executable, "-c", "import ssl, sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
               "sys.argv[1], context=ssl.create_default_context(cafile=sys.argv[2]), timeout=5).read().decode())",
               f"https://{SERVER_IP}:{PORT}/metrics", str(m["cert"]), timeout=10).stdout
    check = subprocess_run(["promtool", "check", "metrics"], text)
    assert check.returncode == 0, check.stdout + check.stderr
    for secret in ("alpha", "beta", a.public_key, b.public_key):
        assert secret not in text


def subprocess_run(cmd: list[str], stdin: str):
    import subprocess
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
