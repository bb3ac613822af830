"""The skip policy: a skipped test fails the run unless tests/allowed_skips.toml lists it with a
reason, and under AGENTMEM_STRICT_SKIPS=1 (CI) even then."""

import os
import subprocess
import sys
from pathlib import Path

from .conftest import allowed_skips

REPO = Path(__file__).parent.parent


def _pytest(tmp_path: Path, strict: bool, listed: bool = False) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "def test_passes():\n    assert True\n\n"
        "def test_skips():\n    pytest.skip('no reason given')\n"
    )
    allowed = tmp_path / "allowed.toml"
    allowed.write_text('[[skip]]\ntest = "test_x.py::test_skips"\nreason = "needs root: a test of the policy"\n' if listed else "")
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "AGENTMEM_STRICT_SKIPS": "1" if strict else "0",
        "AGENTMEM_ALLOWED_SKIPS": str(allowed),
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )


def test_an_unlisted_skip_fails_the_run(tmp_path):
    proc = _pytest(tmp_path, strict=False)
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 passed" in proc.stdout
    assert "not on allowed_skips.toml" in proc.stdout and "no reason given" in proc.stdout


def test_a_listed_skip_passes_except_under_strict_skips(tmp_path):
    proc = _pytest(tmp_path, strict=False, listed=True)
    assert proc.returncode == 0 and "1 passed, 1 skipped" in proc.stdout, proc.stdout
    proc = _pytest(tmp_path, strict=True, listed=True)
    assert proc.returncode == 1 and "AGENTMEM_STRICT_SKIPS=1" in proc.stdout, proc.stdout


def test_every_listed_skip_names_a_real_test_and_says_why():
    allowed = allowed_skips()
    assert allowed, "the list is read"
    for test, reason in allowed.items():
        path, name = test.split("::")
        assert f"def {name}(" in (REPO / path).read_text(), f"{test} is listed but does not exist"
        assert "needs root" in reason
