"""Keep test runs hermetic: loopback-only sockets and hub settings that point at nothing real.

huggingface_hub reads HF_ENDPOINT when it is imported, so ``isolate_environment`` runs before any
test module imports transformers. Older unsloth releases fetch a model-name mapper from GitHub at
run time; the socket guard refuses that connection, and the release code falls back to its
bundled mapper (``tests/test_hermetic.py`` proves both).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from contextlib import contextmanager

LOOPBACK_HOSTS = ["127.0.0.1", "::1"]
# Port 9 (discard) on loopback: nothing listens, so a stray hub call fails at once instead of
# reaching huggingface.co. Tests that want a hub start the local one and point HF_ENDPOINT at it.
CLOSED_ENDPOINT = "http://127.0.0.1:9"


def isolate_environment(environ: dict = os.environ) -> None:
    """Point every hub and telemetry knob at nothing real, unless the user opted into the live hub."""
    home = tempfile.mkdtemp(prefix="qvl-hf-home-")
    environ["HF_ENDPOINT"] = CLOSED_ENDPOINT
    environ["HF_HOME"] = home
    environ["HF_HUB_CACHE"] = os.path.join(home, "hub")
    environ.pop("HF_TOKEN", None)
    environ.pop("HUGGING_FACE_HUB_TOKEN", None)
    environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    environ["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
    environ["HF_HUB_ENABLE_HF_TRANSFER"] = "0"
    # The local hub answers from loopback, but a loaded 2-core CI machine can keep it waiting past
    # huggingface_hub's 10 s defaults.
    environ["HF_HUB_ETAG_TIMEOUT"] = "120"
    environ["HF_HUB_DOWNLOAD_TIMEOUT"] = "120"
    environ["DO_NOT_TRACK"] = "1"
    environ["UNSLOTH_DISABLE_STATISTICS"] = "1"
    # unsloth writes generated modules into ./unsloth_compiled_cache unless told otherwise.
    environ["UNSLOTH_COMPILE_LOCATION"] = os.path.join(home, "unsloth_compiled_cache")
    environ["WANDB_DISABLED"] = "true"
    environ["TOKENIZERS_PARALLELISM"] = "false"


@contextmanager
def loopback_only():
    """Refuse (and record) every connection and name lookup that is not loopback, in or out of pytest.

    Yields the list of refused targets ("host:port"), so a caller can report what release code tried.
    """
    refused: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def is_loopback(host) -> bool:
        if not isinstance(host, str):
            return True  # unix sockets and the like
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return host == "localhost"

    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if not is_loopback(host):
            refused.append(f"{host}:{address[1]}")
            raise ConnectionRefusedError(f"qvl-harness: network access to {host} refused (hermetic run)")
        return real_connect(sock, address)

    def getaddrinfo(host, port, *args, **kwargs):
        if host is not None and not is_loopback(host if isinstance(host, str) else host.decode()):
            refused.append(f"{host}:{port}")
            raise socket.gaierror(socket.EAI_NONAME, f"qvl-harness: lookup of {host} refused (hermetic run)")
        return real_getaddrinfo(host, port, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
    try:
        yield refused
    finally:
        socket.socket.connect, socket.getaddrinfo = real_connect, real_getaddrinfo
