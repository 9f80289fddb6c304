"""megapodctl's exit codes, and the one error a command raises itself: a
usage mistake argparse cannot see. Failures of megapodd's own come from
megapodd.api.client."""

EXIT_OK = 0
EXIT_FAILED = 1  # refused or failed: megapodd (or the check) said why
EXIT_USAGE = 2  # the command line is wrong
EXIT_UNREACHABLE = 3  # megapodd did not answer: an action may or may not have run


class UsageError(Exception):
    """The command line is wrong; the message says how to write it."""
