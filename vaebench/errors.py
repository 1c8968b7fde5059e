class UserError(Exception):
    """A mistake the user can fix (bad config value, bad data file): one line, exit status 2, no traceback."""
