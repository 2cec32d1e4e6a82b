"""The one exception type that means "the user's input is wrong"."""


class UsageError(Exception):
    """Bad input from the user: a missing file, a malformed line, a mismatched checkpoint.

    Scripts catch it, print its message (which names the file, and the line where there is
    one) on stderr and exit with status 2, without a traceback.
    """
