"""Run the ``ip`` / ``nft`` / ``tc`` commands of the harness with errors worth reading."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

DEFAULT_TIMEOUT_S = 30.0


class CommandError(RuntimeError):
    """A harness command failed; the message holds the command line and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = stderr.strip() or stdout.strip() or "(no output)"
        super().__init__(f"command failed (exit {returncode}): {shlex.join(self.argv)}: {detail}")


def run_command(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` capturing text output; raise :class:`CommandError` if it fails."""
    try:
        done = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, "", f"{argv[0]}: not found ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, -1, "", f"timed out after {timeout}s") from exc
    if check and done.returncode != 0:
        raise CommandError(argv, done.returncode, done.stdout, done.stderr)
    return done
