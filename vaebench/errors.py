class UserError(Exception):
    """A mistake the user can fix (bad config value, bad data file): one line, exit status 2, no traceback."""


def require(ok: bool, key: str, message: str) -> None:
    """A range check of a config key: UserError naming the key when `ok` is false."""
    if not ok:
        raise UserError(f"config key '{key}': {message}")
