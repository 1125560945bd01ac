"""The one error type tuner raises for things a user can fix, and the stop a user asked for."""


class TunerError(Exception):
    """A problem with the user's input (recipe, data, paths, model) described in one paragraph.

    The CLI prints the message without a traceback and exits with code 2. The message names the file, the key path
    or the row, and says what to do.
    """

    exit_code = 2


# The exit code of a command stopped by Ctrl-C (SIGINT), as shells give it: 128 + 2.
SIGINT_EXIT = 130


class Stopped(TunerError):
    """The user stopped tuner (Ctrl-C) outside the training loop (loading, scoring): what was kept and how to go on,
    in one paragraph; exit code 130."""

    exit_code = SIGINT_EXIT
