"""One exception type for bad input: the CLI and the plugin print it as one line, never a traceback."""


class HarnessError(Exception):
    """A problem the user can fix (bad file, unknown version, missing GPU); ``str()`` is the whole message."""


def one_line(text: str, limit: int = 300) -> str:
    """A tool's stderr as one line: warnings dropped, pip's last ``ERROR:`` line (its verdict), else
    every line joined (uv spreads one error and its causes over several; box drawing dropped)."""
    lines = [line.strip(" ╰─▶×│") for line in text.splitlines()]
    lines = [line for line in lines if line and not line.lower().startswith("warning")]
    verdicts = [line for line in lines if line.startswith("ERROR:")]
    joined = verdicts[-1] if verdicts else " ".join(lines)
    if len(joined) <= limit:
        return joined or "(no output)"
    head = limit // 3  # what failed, and (the end of a tool's message) why
    return f"{joined[:head]} ... {joined[-(limit - head - 5) :]}"
