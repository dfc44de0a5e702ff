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


def http_call(
    url: str,
    data=None,
    ctype: str = "application/json",
    method: str | None = None,
    replies: list | None = None,
    timeout: float = 120,
) -> tuple[int, object]:
    """One HTTP request on loopback -> (status, the JSON answer, or the raw bytes when it is not JSON). ``data``: a
    dict (sent as JSON) or bytes; ``replies``: a list the answer's headers (``HTTPMessage``) are appended to."""
    import json
    import urllib.error
    import urllib.request

    body = json.dumps(data).encode() if isinstance(data, dict) else data
    req = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": ctype} if body is not None else {}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
            if replies is not None:
                replies.append(r.headers)  # (case-insensitive .get)
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw
