"""The install steps the Dockerfile runs (the locked dependencies, then ``pip install --no-deps
.``), checked in a fresh venv, since no Docker engine is at hand here; and the lock files
(requirements/*.lock, ``make lock``) against pyproject.toml and the suite's own environment."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
_GENERATED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".gateway",
    ".schemathesis",
)  # fmt: skip
"""What a build or a run leaves in the working tree (.gitignore), not the project's source."""


def test_wheel_installs_into_a_fresh_venv_and_the_entry_point_runs(tmp_path: Path) -> None:
    before = set(ROOT.iterdir())
    # Built from a copy of the working tree (tests included, to see them left out): setuptools
    # builds in the source directory (build/, *.egg-info), which must not be the repository.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_GENERATED)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "dist"), str(source)],
        check=True, timeout=120,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("hailuo_gateway-*.whl")
    assert set(ROOT.iterdir()) == before, "the build left files in the repository"
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


def _lock(name: str) -> dict[str, str]:
    """The pins of ``requirements/<name>.lock`` that apply to this interpreter and platform."""
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements" / f"{name}.lock").read_text().splitlines():
        if not line or line[0] in "# ":
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def _declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize(
    ("lock", "extras"), [("runtime", ()), ("dev", ("dev",)), ("docs", ("dev", "docs"))]
)
def test_lock_pins_every_declared_dependency_within_its_range(
    lock: str, extras: tuple[str, ...]
) -> None:
    pins = _lock(lock)
    for requirement in _declared(*extras):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements/{lock}.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock}.lock pins {name}=={pins[name]}, outside {requirement}: "
            "run `make lock`"
        )


def test_shared_pins_agree_between_the_locks() -> None:
    runtime, dev, docs = _lock("runtime"), _lock("dev"), _lock("docs")
    assert {n: dev[n] for n in runtime} == runtime
    assert {n: docs[n] for n in dev} == dev


def test_the_suite_runs_on_exactly_the_dev_lock() -> None:
    installed: dict[str, str] = {
        canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    locked = _lock("dev")
    assert {n: installed.get(n) for n in locked} == locked
    extra = set(installed) - set(locked) - _NOT_LOCKED - set(_lock("docs"))  # `make dashboard`
    assert not extra, f"installed but not locked: {sorted(extra)}"


def test_the_image_install_steps_give_exactly_the_locked_versions(tmp_path: Path) -> None:
    """Runs the Dockerfile's ``pip install`` steps, in order, in a fresh venv on a copy of the
    build context, then compares every installed distribution with requirements/runtime.lock."""
    context = tmp_path / "context"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                _copy(ROOT / source, context / source)
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    steps = [
        line.removeprefix("RUN ").split("&&")[0].split()
        for line in dockerfile.splitlines()
        if line.startswith("RUN pip install")
    ]
    assert [step[-2:] for step in steps] == [
        ["--requirement", "requirements/runtime.lock"], ["--no-deps", "."]
    ]  # fmt: skip
    for step in steps:
        subprocess.run(
            [target / "bin" / "python", "-m", *step, "--quiet"],
            cwd=context, check=True, timeout=300, capture_output=True,
        )  # fmt: skip
    listed = subprocess.run(
        [target / "bin" / "python", "-m", "pip", "list", "--format", "json"],
        cwd=context, check=True, timeout=60, capture_output=True, text=True,
    ).stdout  # fmt: skip
    installed: dict[str, str] = {
        canonicalize_name(d["name"]): d["version"] for d in json.loads(listed)
    }
    assert installed.pop("hailuo-gateway") == _project_version()
    locked = _lock("runtime")
    assert {n: v for n, v in installed.items() if n in locked or n not in _NOT_LOCKED} == locked


# The installer's own tools, in a venv before any lock is installed (unless a lock pins them).
_NOT_LOCKED = {"pip", "setuptools", "wheel", "hailuo-gateway"}


def _project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def _copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(source, destination)
