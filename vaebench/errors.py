class UserError(Exception):
    """A mistake the user can fix (bad config value, bad data file): one line, exit status 2, no traceback."""


def require(ok: bool, key: str, message: str) -> None:
    """A range check of a config key: UserError naming the key when `ok` is false."""
    if not ok:
        raise UserError(f"config key '{key}': {message}")


def auto_or(value, key: str, convert, what: str):
    """A config value that is "auto" or a number: "auto" as it is, else convert(value) (float, int); a UserError
    naming the key and what it takes otherwise. The caller checks the number's range."""
    if value == "auto":
        return value
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise UserError(f"config key '{key}': use auto or {what}, got {value!r}") from None
