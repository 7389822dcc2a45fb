"""The one exception type the tool raises for problems a user can fix."""

from __future__ import annotations


class NeuralartError(Exception):
    """A problem with the user's input, configuration or environment.

    The message is one line that names the problem and, where possible, what to do.
    The command line turns it into a red line on stderr and exit code 1.
    """


class NeuralartWarning(UserWarning):
    """Something the tool did on the user's behalf that they should know about."""
