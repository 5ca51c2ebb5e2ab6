"""The one exception type the command line turns into a one-line error message."""


class FerError(Exception):
    """A user-facing error: bad input, missing file, unreachable source.

    The command line prints ``error: <message>`` and exits with status 2, no traceback.
    """
