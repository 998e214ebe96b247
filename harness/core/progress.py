"""Progress of long work (downloads, model training, environment builds): one line per step on stderr.

CI logs keep every line, so steps are printed as they finish ("[3/13] unsloth==2024.12.1: 0.2 MiB,
1.1s") rather than redrawn in place; ``quiet`` (the commands' ``-q``, or QVL_QUIET=1) silences them.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

_SINK = None  # where lines go inside pytest (the plugin writes them past output capture)


def set_sink(write) -> None:
    """Send progress lines to ``write(text)`` instead of stderr (None: back to stderr)."""
    global _SINK
    _SINK = write


@contextmanager
def on_stderr():
    """Progress on stderr while this lasts (a command run inside a test writes where a command does)."""
    global _SINK
    saved, _SINK = _SINK, None
    try:
        yield
    finally:
        _SINK = saved


def relay(line: str) -> None:
    """Pass on a progress line a child process printed, to where this process's lines go."""
    if _SINK is not None:
        _SINK(line)
    else:
        print(line, file=sys.stderr, flush=True)


def quiet_by_default() -> bool:
    return os.environ.get("QVL_QUIET", "") not in ("", "0")


class Progress:
    def __init__(self, total: int, title: str, *, quiet: bool | None = None, stream=None):
        self.total, self.title, self.done = total, title, 0
        self.quiet = quiet_by_default() if quiet is None else quiet
        self.stream = stream
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.line(f"{title}: {total} step{'s' if total != 1 else ''}")

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if _SINK is not None and self.stream is None:
            _SINK(f"qvl-harness: {text}")
        else:
            print(f"qvl-harness: {text}", file=self.stream or sys.stderr, flush=True)

    def step(self, item: str, detail: str = "") -> None:
        with self._lock:
            self.done += 1
            self.line(f"[{self.done}/{self.total}] {item}" + (f": {detail}" if detail else ""))

    def finish(self, detail: str = "") -> None:
        self.line(f"{self.title}: done in {time.monotonic() - self.started:.0f}s" + (f" ({detail})" if detail else ""))
