"""`qvl-harness known match`: the three seed messages with the seeds' stacks name the right failure,
its fix and the suite that reproduces it; anything else says so in one line."""

from __future__ import annotations

import io

import pytest

from harness.cli import main
from harness.failures import match, registry

SEED_404 = (
    "huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. (Request ID: Root=1-677b9d4e-3f0c)\n\n"
    "Repository Not Found for url: https://huggingface.co/api/models/unsloth/qwen2-vl-72b-instruct-unsloth-bnb-4bit/revision/main."
)
SEED_DTYPE = (
    '  File "unsloth_zoo/peft_utils.py", line 206, in requires_grad_pre_hook\n    input[0].requires_grad_(True)\n'
    "RuntimeError: only Tensors of floating point dtype can require gradients"
)
SEED_GARBAGE = "The model describes my chest X-ray as a shirt with geometric patterns"
STACK_1485 = "unsloth==2025.1.5 unsloth-zoo==2025.1.3 transformers==4.48.0"  # #1485 and #1510's era
STACK_1347 = "unsloth==2024.11.11 unsloth-zoo==2024.11.8 transformers==4.46.3"


def known_match(capsys, *args) -> tuple[int, list[str]]:
    status = main(["known", "match", *args])
    captured = capsys.readouterr()
    return status, (captured.out + captured.err).splitlines()


@pytest.mark.parametrize(
    "text, stack, failure, fixed, cell, suite",
    [
        (SEED_404, STACK_1485, "404", "unsloth 2025.1.6", "u2025-01-05", "suites/test_404_missing_repo.py"),
        (SEED_DTYPE, STACK_1485, "dtype-grad", "unsloth-zoo 2025.3.13", "u2025-01-05", "suites/test_dtype_grad.py"),
        (
            SEED_GARBAGE,
            STACK_1347,
            "garbage-output",
            "unsloth 2024.12.2",
            "u2024-11-11",
            "suites/test_garbage_output.py",
        ),
    ],
)
def test_a_seed_message_names_its_failure_fix_and_suite(capsys, text, stack, failure, fixed, cell, suite):
    status, lines = known_match(capsys, text, "--stack", stack)
    assert status == 0
    assert lines[0].startswith(f"{failure}: ")
    assert lines[2].startswith("  your stack:  has it: ")
    assert f"  fixed in:    {fixed}" in lines
    assert any(line.startswith("  workaround:  ") for line in lines)
    assert f"  reproduce:   tox -e cell-{cell} -- {suite}" in lines
    assert len(lines) <= 9  # a few lines, not a report


def test_garbage_output_on_a_fixed_release_points_at_the_load_time_path(capsys):
    """unsloth 2025.3.15 maps the 7B name correctly; the same symptom there is the load-time path."""
    status, lines = known_match(
        capsys, SEED_GARBAGE, "--stack", "unsloth==2025.3.15 unsloth-zoo==2025.3.14 transformers==4.50.0"
    )
    assert status == 0 and lines[0].startswith("vision-4bit-at-load: ")
    assert "  reproduce:   tox -e cell-u2025-03-15 -- suites/test_garbage_output.py" in lines
    assert any(line.startswith("also matches garbage-output") and "outside the range" in line for line in lines)


def test_the_workaround_stack_of_the_seed_is_outside_dtype_grad(capsys):
    status, lines = known_match(capsys, SEED_DTYPE, "--stack", "unsloth==2024.12.11 unsloth-zoo==2024.12.6")
    assert status == 0 and lines[2].startswith("  your stack:  outside the range: unsloth-zoo 2024.12.6 is outside")


def test_without_a_stack_it_asks_for_one_and_reads_stdin(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(SEED_404))
    status, lines = known_match(capsys, "-")
    assert status == 0 and lines[0].startswith("404: ")
    assert (
        lines[2]
        == "  your stack:  stack not given: affects unsloth<2025.1.6,>=2024.12.2; give --stack to check a user's"
    )


def test_an_incomplete_stack_says_what_is_missing(capsys):
    status, lines = known_match(capsys, SEED_GARBAGE, "--stack", "unsloth==2024.11.11")
    assert lines[2] == "  your stack:  incomplete stack: give transformers==VERSION to decide"


def test_an_unknown_error_is_one_line(capsys):
    status, lines = known_match(capsys, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert status == 1 and len(lines) == 1
    known = ", ".join(registry.load_registry())
    assert lines[0].startswith(f"no known failure matches this text (the registry knows {known})")


@pytest.mark.parametrize(
    "stack, message",
    [
        ("unsloth=2024.11.11", "'unsloth=2024.11.11' is not PACKAGE==VERSION"),
        ("unslot==2024.11.11", "unknown package 'unslot'"),
        ("unsloth==banana", "'banana' is not a version"),
    ],
)
def test_a_bad_stack_is_one_line(capsys, stack, message):
    status, lines = known_match(capsys, SEED_404, "--stack", stack)
    assert status == 2 and len(lines) == 1 and message in lines[0]


def test_every_registry_message_matches_its_own_seed():
    """Each entry's messages find the entry in its own seed text (the registry cannot drift from its seeds)."""
    for failure in registry.load_registry().values():
        found = [m.failure.id for m in match.match(failure.seed, registry.load_registry(), None)]
        assert failure.id in found or failure.seed.startswith("(no user report"), (failure.id, failure.seed)
