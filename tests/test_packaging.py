"""The package as a user gets it: sdist, wheel, and the example suite run against the wheel.

Slow (two builds, a fresh virtualenv): marked ``packaging``; it runs with the rest of the suite.
It needs only the package index (the build backend, aiosqlite and pytest-asyncio).
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import pytest_noplusone

ROOT = Path(__file__).resolve().parent.parent
VERSION = pytest_noplusone.__version__
NAME = f"pytest_noplusone-{VERSION}"

#: What the sdist must hold besides the package: what the README links to and the tests need.
SDIST_FILES = [
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "pyproject.toml",
    "MANIFEST.in",
    "conftest_example.py",
    "mkdocs.yml",
    "docs/index.md",
    "docs/github-workflow.yml",
    "tests/conftest.py",
    "tests/test_packaging.py",
    "examples/blog/conftest.py",
    "examples/blog/test_blog.py",
    "pytest_noplusone/py.typed",
]

pytestmark = pytest.mark.packaging


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; its output, or a failure showing it."""
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def clean_env() -> dict[str, str]:
    """The environment without this checkout's virtualenv, paths or PostgreSQL URL."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "NOPLUSONE_PG_URL", "NOPLUSONE_REQUIRE_PG"):
        env.pop(key, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist built from the checkout, and the wheel built from the unpacked sdist."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--sdist", "--outdir", out, ROOT, cwd=out, env=clean_env())
    with tarfile.open(out / f"{NAME}.tar.gz") as sdist:
        sdist.extractall(out / "src", filter="data")
    # Built from the sdist, as pip does: a file missing from the sdist breaks the wheel.
    run(
        sys.executable, "-m", "build", "--wheel", "--outdir", out, out / "src" / NAME,
        cwd=out, env=clean_env(),
    )  # fmt: skip
    return out


def test_sdist_holds_the_tests_examples_and_license(dist: Path) -> None:
    unpacked = dist / "src" / NAME
    missing = [name for name in SDIST_FILES if not (unpacked / name).is_file()]
    assert missing == []
    assert not list(unpacked.rglob("__pycache__"))


def test_wheel_is_pure_python_with_license_and_entry_points(dist: Path) -> None:
    wheel = dist / f"{NAME}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.parser.Parser().parsestr(
            archive.read(f"{NAME}.dist-info/METADATA").decode()
        )
        entry_points = archive.read(f"{NAME}.dist-info/entry_points.txt").decode()
    assert f"{NAME}.dist-info/licenses/LICENSE" in names
    assert "pytest_noplusone/py.typed" in names
    assert not [name for name in names if name.endswith((".so", ".pyd", ".c"))]
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata.get_all("Project-URL") is None
    assert "noplusone = pytest_noplusone.plugin" in entry_points
    assert "noplusone = pytest_noplusone.__main__:main" in entry_points


def test_example_suite_runs_against_the_installed_wheel(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = clean_env()
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    wheel = dist / f"{NAME}-py3-none-any.whl"
    run(python, "-m", "pip", "install", "-q", f"{wheel}[aiosqlite]", "pytest-asyncio",
        cwd=tmp_path, env=env)  # fmt: skip
    # A directory without the checkout: the plugin can only come from the wheel.
    project = tmp_path / "project"
    shutil.copytree(dist / "src" / NAME / "examples", project / "examples")
    (project / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "addopts = --strict-markers -p no:cacheprovider\n"
    )
    located = run(python, "-c", "import pytest_noplusone as p; print(p.__file__)",
                  cwd=project, env=env)  # fmt: skip
    assert Path(located.strip()).is_relative_to(venv)
    output = run(python, "-m", "pytest", "examples/blog", cwd=project, env=env)
    assert "noplusone: enforce=raise_on_sql nplusone=fail threshold=2" in output
    assert " passed" in output.splitlines()[-1]
    assert "failed" not in output.splitlines()[-1]
    assert run(venv / "bin" / "noplusone", "--version", cwd=project, env=env) == (
        f"pytest-noplusone {VERSION}\n"
    )
