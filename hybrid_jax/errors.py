"""One exception type for bad user input, so the CLI can print a single clear line."""


class InputError(ValueError):
    """Bad user input: a malformed file, an unknown key, an impossible value.

    The message names the file or key and what is wrong with it.
    """
