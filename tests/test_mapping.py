import importlib.metadata
import os

import pytest

from harness.core.errors import HarnessError
from harness.releases import code as release_code
from harness.releases.mapper import ReleaseMapper
from harness.releases.sandbox import StandIn

UNKNOWN = "someone/not-in-any-mapper"


def test_old_release_runtime_mapper_fetch_is_refused_and_falls_back():
    # 2024.11.11 asks raw.githubusercontent.com for a newer mapper when a name is unknown.
    run = ReleaseMapper(release_code.from_wheel("unsloth", "2024.11.11")).resolve(UNKNOWN, True)
    assert run.blocked_connections and all("githubusercontent" in c for c in run.blocked_connections)
    assert run.resolved == UNKNOWN and run.error is None


def test_release_code_loads_unmodified_from_the_wheel():
    mapper = ReleaseMapper(release_code.from_wheel("unsloth", "2024.12.11"))
    assert mapper.loader_file == "unsloth/models/loader_utils.py"
    assert "unsloth/Qwen2-VL-72B-Instruct-unsloth-bnb-4bit" in mapper.mapper_names()
    assert not mapper.setup_errors


def test_missing_wheel_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("QVL_CACHE", str(tmp_path))
    with pytest.raises(HarnessError, match=r"run: qvl-harness releases fetch unsloth==2024\.12\.2"):
        release_code.from_wheel("unsloth", "2024.12.2")


def test_a_stand_in_module_refuses_use():
    torch = StandIn("torch")
    with pytest.raises(HarnessError, match="used torch.cuda.is_available"):
        torch.cuda.is_available()
    with pytest.raises(HarnessError, match="tested torch.x"):
        bool(torch.x)


@pytest.mark.slow
def test_isolated_mapping_equals_the_imported_release():
    """The isolated run of the installed release agrees with `import unsloth` on every mapper name."""
    if "UNSLOTH_ALLOW_CPU" not in os.environ and not __import__("torch").cuda.is_available():
        pytest.skip("import unsloth on CPU needs UNSLOTH_ALLOW_CPU=1 (tox sets it)")
    from unsloth.models.loader_utils import get_model_name

    isolated = ReleaseMapper(release_code.installed("unsloth"))
    assert isolated.code.version == importlib.metadata.version("unsloth")
    names = isolated.mapper_names()
    assert len(names) > 100
    # The imported function is slow per call (about 50 ms): every Qwen2-VL name and a sample of the rest.
    sample = [n for n in names if "qwen2-vl" in n.lower()] + names[::25] + [UNKNOWN]
    for name in sample:
        for four_bit in (True, False):
            assert isolated.resolve(name, four_bit).resolved == get_model_name(name, four_bit), name
