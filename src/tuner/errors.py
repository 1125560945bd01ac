"""The one error type tuner raises for things a user can fix."""


class TunerError(Exception):
    """A problem with the user's input (recipe, data, paths, model) described in one paragraph.

    The CLI prints the message without a traceback and exits with code 2. The message names the file, the key path
    or the row, and says what to do.
    """

    exit_code = 2
