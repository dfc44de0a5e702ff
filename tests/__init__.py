"""The test suite mirrors the package: tests/data, tests/modeling, ... ; tests/pipelines for the orchestration.

``ROOT`` is the repository root and ``FIXTURES`` the committed real-format fixtures (tests/fixtures).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
