"""One exception type for bad input: the CLI and the plugin print it as one line, never a traceback."""


class HarnessError(Exception):
    """A problem the user can fix (bad file, unknown version, missing GPU); ``str()`` is the whole message."""
