"""Errors that the command line reports as one clear line, without a traceback."""


class UserError(Exception):
    """A problem with the user's input (a file, an option, the weights): the message says what to fix."""
