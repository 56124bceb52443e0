"""The install steps the Dockerfile runs (``pip install .``), checked in a fresh venv, since no
Docker engine is at hand here."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_wheel_installs_into_a_fresh_venv_and_the_entry_point_runs(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "dist"), str(ROOT)],
        check=True, timeout=120,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("hailuo_gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"gateway/app.py", "providers/runapi.py", "providers/sandbox/server.py"} <= names
    assert not any(n.startswith("tests/") for n in names)

    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    site = subprocess.run(
        [target / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    # The dependencies come from this suite's environment; the project's files from the wheel.
    env = {"PYTHONPATH": sysconfig.get_path("purelib"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [target / "bin" / "python", "-m", "gateway", "serve", "--help"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout
    imported = subprocess.run(
        [target / "bin" / "python", "-c", "import gateway.app, gateway; print(gateway.__file__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(site)


def test_dockerfile_copies_what_exists_and_runs_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert re.search(r'^CMD \["gateway", "serve"', dockerfile, re.M)
    assert "/healthz" in dockerfile.split("HEALTHCHECK", 1)[1]
    assert not re.search(r"(API_KEY|KEY_DEMO|SECRET)\w*=", dockerfile)
