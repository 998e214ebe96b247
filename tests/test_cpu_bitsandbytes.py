"""The lift of old transformers' CPU bitsandbytes refusal (harness.lab.compat) waits for the first 4-bit load.

Every run on a machine without CUDA asks for it at configure time, child pytest runs included, and importing
transformers' bitsandbytes integration to ask the check costs 3-5 s there. That the lift still happens where
the check refuses is what the old cells' suites show: without it each of their 4-bit loads on transformers
4.46 ends in ``'frozenset' object has no attribute 'discard'``.
"""

from __future__ import annotations

import subprocess
import sys

ASK_THEN_LOAD = """
import sys
from harness.lab import compat
compat.allow_cpu_bitsandbytes()
compat.allow_cpu_bitsandbytes()  # asked again (each 4-bit load asks): one finder, not two
print(compat.BNB_INTEGRATION in sys.modules, sum(isinstance(f, compat._LiftOnImport) for f in sys.meta_path))
from transformers.integrations import validate_bnb_backend_availability as check
print(check in compat._PASSED or check is compat._backend_available)
"""


def test_asking_imports_nothing_and_the_first_import_is_checked():
    done = subprocess.run([sys.executable, "-c", ASK_THEN_LOAD], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "1", "True"], done.stdout + done.stderr[-2000:]
