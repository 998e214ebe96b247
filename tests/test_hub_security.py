"""The local hub serves only its repos' files, and only to this machine: every path traversal form is a 404,
and it listens on 127.0.0.1, so the machine's other addresses cannot reach it."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest

from harness.data.hub_server import LocalHub

SECRET = "not a repo file"
SNAPSHOT = 'description = "one repo"\ndate = 2025-01-01\n[[repos]]\nid = "owner/repo"\n'

TRAVERSALS = [
    "/owner/repo/resolve/main/../secret.txt",  # a plain ../
    "/owner/repo/resolve/main/%2e%2e/secret.txt",  # encoded dots
    "/owner/repo/resolve/main/..%2fsecret.txt",  # an encoded slash
    "/owner/repo/resolve/main/%2e%2e%2f%2e%2e%2fsecret.txt",  # everything encoded, two levels
    "/owner/repo/resolve/main/%252e%252e%252fsecret.txt",  # encoded twice
    "/owner/repo/resolve/main//etc/passwd",  # an absolute path
    "/owner/repo/resolve/main/%2Fetc%2Fpasswd",  # an encoded absolute path
    "/owner/repo/resolve/main/..%5csecret.txt",  # an encoded backslash
    "/owner/repo/resolve/main/..\\secret.txt",  # a backslash
    "/../../resolve/main/secret.txt",  # out of the repo id
    "/api/models/owner/repo/tree/main/..",  # a listing of the parent
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub whose one repo is a folder beside a file it must never serve."""
    root = tmp_path_factory.mktemp("hub")
    (root / "served").mkdir()
    (root / "served" / "config.json").write_text('{"model_type": "toy"}')
    (root / "secret.txt").write_text(SECRET)
    (root / "snapshot.toml").write_text(SNAPSHOT)
    with LocalHub(root / "snapshot.toml", lambda kind: root / "served") as served:
        yield served


def get(hub, path: str) -> tuple[int, bytes]:
    host, port = hub.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path)  # sent as written: http.client normalizes nothing
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_repo_file_is_served(hub):
    assert get(hub, "/owner/repo/resolve/main/config.json") == (200, b'{"model_type": "toy"}')


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_is_a_404(hub, path):
    status, body = get(hub, path)
    assert status == 404 and SECRET.encode() not in body and b"root:" not in body


PROBE = """
import fcntl, json, socket, struct, sys
port = int(sys.argv[1])

def addresses():
    # this machine's own IPv4 addresses, read from its interfaces (SIOCGIFADDR): nothing is sent
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                yield socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))[20:24])
            except OSError:
                pass

def reaches(address):
    try:
        socket.create_connection((address, port), timeout=3).close()
        return True
    except OSError:
        return False

print(json.dumps({a: reaches(a) for a in ["127.0.0.1", *addresses()]}))
"""


def test_it_listens_on_loopback_only(hub):
    assert hub._server.server_address[0] == "127.0.0.1"
    # a separate process: this one's sockets are held to loopback (pytest-socket); only own addresses are tried
    done = subprocess.run(
        [sys.executable, "-c", PROBE, hub.url.rpartition(":")[2]], capture_output=True, text=True, timeout=60
    )
    reached = json.loads(done.stdout)
    assert reached.pop("127.0.0.1") is True  # the probe can connect at all
    others = {a: ok for a, ok in reached.items() if not a.startswith("127.")}
    if not others:
        pytest.skip("this machine has no non-loopback address to try")
    assert not any(others.values()), f"the hub answered on {[a for a, ok in others.items() if ok]}"
