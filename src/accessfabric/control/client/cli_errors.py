"""The errors ``control`` commands raise and the exit codes they map to (one line on stderr).

Its own module so the commands (``control/server/cli.py``) and the node-side agent
(``control/client/agent.py``) share them without importing each other.
"""

from __future__ import annotations

from accessfabric.exit_codes import Exit

EXIT_USER = int(Exit.USAGE)
EXIT_UNREACHABLE = int(Exit.UNREACHABLE)


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit status 2."""


class Failed(Exception):
    """The command could not do its work (e.g. its port is taken): one line, exit status 1."""


class Unreachable(Exception):
    """The control plane did not answer: printed as one line, exit status 3."""
