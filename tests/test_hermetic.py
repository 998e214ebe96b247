import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from pytest_socket import SocketConnectBlockedError

from harness.pytest import hermetic


def test_non_loopback_connections_are_refused():
    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("93.184.216.34", 443), timeout=1)


def test_loopback_is_allowed():
    class Ok(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.handle_request, daemon=True).start()
    conn = socket.create_connection(server.server_address, timeout=5)
    conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert conn.recv(64).startswith(b"HTTP/1.0 204")
    conn.close()
    server.server_close()


def test_hub_settings_point_at_nothing_real():
    assert os.environ["HF_ENDPOINT"] == hermetic.CLOSED_ENDPOINT
    assert "HF_TOKEN" not in os.environ
    import huggingface_hub.constants as constants

    assert constants.ENDPOINT == hermetic.CLOSED_ENDPOINT
    assert constants.HF_HUB_CACHE.startswith(os.environ["HF_HOME"])
