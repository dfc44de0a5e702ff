"""The test suite mirrors the package: tests/data, tests/modeling, ... ; tests/pipelines for the orchestration.

``ROOT`` is the repository root and ``FIXTURES`` the committed real-format fixtures (tests/fixtures).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def default_sigint() -> None:
    """``preexec_fn`` for a child a test interrupts with SIGINT (as Ctrl-C would): the default disposition, unblocked.
    A job started in the background by a non-interactive shell (``make test &``, CI wrappers) inherits SIGINT
    *ignored*, Python then installs no KeyboardInterrupt handler, and the child would never see the interrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
