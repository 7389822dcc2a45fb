"""The command line: parses, resolves configuration, draws progress, maps errors to exit codes.

The only code that prints. Exit codes: 0 success, 1 input or configuration error,
2 usage error, 130 interrupted.
"""

from neuralart.cli import video as _video  # noqa: F401  (registers `neuralart video` on app)
from neuralart.cli.commands import app, main

__all__ = ["app", "main"]
