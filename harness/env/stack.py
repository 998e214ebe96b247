"""What is actually importable in the running environment: the stack every result is recorded with."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import warnings
from dataclasses import asdict, dataclass, field

from harness.core import packages
from harness.releases import code as release_code

PACKAGES = packages.STACK


@functools.cache  # a process never changes its own environment; a cell asks thousands of times
def dist_version(name: str) -> str | None:
    """The installed version; a commit installed from git shows as VERSION+gSHORT (a PEP 440 local label)."""
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    commit = release_code.installed_commit(name)
    return f"{version}+g{commit[1][:7]}" if commit else version


@dataclass(frozen=True)
class Stack:
    packages: dict[str, str | None]
    python: str
    cuda: str | None
    gpus: list[dict] = field(default_factory=list)
    cell: str | None = None

    @property
    def arch(self) -> str:
        """'cpu' or the first GPU's architecture ("sm_90"): goldens of one architecture stand in for each other."""
        return self.gpus[0]["arch"] if self.gpus else "cpu"

    @property
    def device_class(self) -> str:
        """'cpu' or the first GPU's name, lower-cased with dashes: keys device-dependent expectations."""
        if not self.gpus:
            return "cpu"
        return "gpu-" + self.gpus[0]["name"].lower().replace("nvidia ", "").replace(" ", "-")

    def as_dict(self) -> dict:
        return {**asdict(self), "device_class": self.device_class, "arch": self.arch}

    def rows(self) -> list[tuple[str, str]]:
        rows = [(name, version or "not installed") for name, version in self.packages.items()]
        rows.append(("python", self.python))
        rows.append(("cuda", self.cuda or "none"))
        for i, gpu in enumerate(self.gpus):
            rows.append((f"gpu{i}", f"{gpu['name']} ({gpu['memory_gib']:.1f} GiB)"))
        if not self.gpus:
            rows.append(("gpu", "none visible"))
        rows.append(("cell", self.cell or "(none: the env as it is)"))
        return rows

    def header_line(self) -> str:
        short = {"unsloth-zoo": "zoo", "huggingface_hub": "hub", "bitsandbytes": "bnb"}
        parts = [f"{short.get(n, n)}={v or '-'}" for n, v in self.packages.items()]
        gpu = ", ".join(g["name"] for g in self.gpus) or "no GPU"
        return f"qvl-harness stack: {' '.join(parts)} python={self.python} cuda={self.cuda or '-'} [{gpu}]" + (
            f" cell={self.cell}" if self.cell else ""
        )

    def table(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in self.rows())


def _torch_devices() -> tuple[str | None, list[dict]]:
    if dist_version("torch") is None:
        return None, []
    with warnings.catch_warnings():  # torch's own deprecation notices at import are not this run's
        warnings.simplefilter("ignore", DeprecationWarning)
        import torch

    cuda = torch.version.cuda
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append(
                {"name": props.name, "memory_gib": props.total_memory / 2**30, "arch": f"sm_{props.major}{props.minor}"}
            )
    return cuda, gpus


def collect() -> Stack:
    cuda, gpus = _torch_devices()
    return Stack(
        packages={name: dist_version(name) for name in PACKAGES},
        python=platform.python_version(),
        cuda=cuda,
        gpus=gpus,
        cell=os.environ.get("QVL_CELL") or None,
    )
