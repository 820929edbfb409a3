"""The one exception type for user mistakes: the CLI prints its message on one line and exits non-zero."""


class UserError(Exception):
    """Bad input from the user (a name, a file, a value): the message names what is wrong and what is valid."""
