"""Checks of user-named values made when the command starts, so a bad one is one line before any work."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.core.errors import HarnessError


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (the usage itself is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 for a free one."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a port (0-65535; 0 picks a free one)")
    return number


def output_dir(path: Path, flag: str) -> Path:
    """The folder ``flag`` names, made now; one line when it cannot be, or cannot be written."""
    if path.exists() and not path.is_dir():
        raise HarnessError(f"{flag} {path}: a file is there, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"{flag} {path}: cannot make this folder: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise HarnessError(f"{flag} {path}: this folder is not writable")
    return path


def future_dir(path: Path, flag: str) -> Path:
    """A folder a command makes later, once its other inputs are checked: refused now if it could not be."""
    if path.exists() and not path.is_dir():
        raise HarnessError(f"{flag} {path}: a file is there, not a folder")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise HarnessError(f"{flag} {path}: cannot make this folder ({existing} is not a writable folder)")
    return path


def checkpoint_dir(path: Path, flag: str) -> Path:
    """A local checkpoint folder (its config.json beside the weights)."""
    if not (path / "config.json").is_file():
        raise HarnessError(f"{flag} {path}: not a checkpoint folder (no config.json in it)")
    return path
