"""A process that imported TFF ends without TFF's teardown error on stderr."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_a_process_that_imported_tff_exits_without_the_service_manager_error():
    # pytest keeps the modules it collected alive into interpreter teardown; there TFF's import-time
    # context was collected after its module's globals were cleared and printed
    # "Exception ignored in ... ServiceManager.__del__ ... 'NoneType' object has no attribute 'Popen'".
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/simulation/test_selection.py"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "test_selection.py::" in completed.stdout  # its tests were collected: the modules that import TFF are loaded
    assert "Exception ignored" not in completed.stderr, completed.stderr[-2000:]
