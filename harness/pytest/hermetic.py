"""Keep test runs hermetic: loopback-only sockets and hub settings that point at nothing real.

huggingface_hub reads HF_ENDPOINT when it is imported, so ``isolate_environment`` runs before any
test module imports transformers. pytest-socket refuses every connection but loopback in tests;
release code run outside pytest goes through harness.core.loopback.
"""

from __future__ import annotations

import os
import tempfile

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
