"""Where the tests find the original tool's inputs and outputs: tests/golden (see its README.md)."""

from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"
BROAD = GOLDEN / "broad_fixtures"
