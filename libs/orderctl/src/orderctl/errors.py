class CommandError(Exception):
    """A failure the operator can act on: reported as one line, exit code 2, no traceback."""
