"""The ``main()`` of ``lightning_unlearn benchmark``, ``tune`` and ``audit``: one error line, exit codes, resume hint.

``run_command(prog, command, reused)`` runs ``command()`` (parse the arguments, run) and turns its ending into the
process's: 0 (done), ``command``'s own return value (1: some runs failed and are recorded), 2 for a
:class:`~.errors.ConfigError` (nothing ran, or nothing was overwritten), 1 for a :class:`~.errors.RunError` or a file
found in the way (``FileExistsError``), 130 for Ctrl-C -- a ``KeyboardInterrupt``, or the ``SystemExit(1)`` Lightning
raises for one caught inside ``fit`` -- with ``run the same command again to resume (<reused>)``. An error prints one
line, ``lightning_unlearn <prog>: error: <message>``, on stderr (no traceback: the message says what to do).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from lightning_unlearn.executors import is_interrupt
from lightning_unlearn.experiment.errors import ConfigError, RunError

__all__ = ["error_line", "run_command"]


def error_line(prog: str, err: BaseException) -> str:
    """``lightning_unlearn <prog>: error: <message on one line>``."""
    return f"lightning_unlearn {prog}: error: " + " ".join(str(err).split())


def run_command(prog: str, command: Callable[[], int | None], reused: str | None = None) -> None:
    """Run ``command`` as the ``lightning_unlearn <prog>`` command (see the module docstring); ``reused``: what a
    restart reuses, for the resume hint after Ctrl-C (``None``: ``command`` says it itself)."""
    try:
        code = command()
    except ConfigError as err:
        _exit(2, error_line(prog, err))
    except (RunError, FileExistsError) as err:
        _exit(1, error_line(prog, err))
    except (KeyboardInterrupt, SystemExit) as err:
        if not is_interrupt(err):
            raise  # the parser's own exit (--help, a bad argument) keeps its code
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores SIGINT after catching one
        hint = f"lightning_unlearn {prog}: interrupted; run the same command again to resume ({reused})"
        _exit(130, hint if reused else None)
    if code:
        raise SystemExit(code)


def _exit(code: int, line: str | None) -> NoReturn:
    if line:
        print(line, file=sys.stderr)
    raise SystemExit(code) from None
