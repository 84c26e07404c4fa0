"""What a buildpack PaaS builds from (issue 20.13): Heroku's and Dokku's Python buildpack refuse
a bare ``pyproject.toml`` and install ``requirements.txt`` (with ``.python-version``). The file
must pin every runtime dependency ``pyproject.toml`` requires, within its range, and installing
from it alone in a fresh virtualenv must give a working ``bridge``."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent.parent


def pins() -> dict[str, Version]:
    """requirements.txt's ``name==version`` lines, by canonical name; every other line must be
    a comment or ``.`` (the bridge itself)."""
    out: dict[str, Version] = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line == ".":
            continue
        req = Requirement(line)
        [spec] = list(req.specifier)
        assert spec.operator == "==", f"not pinned: {line}"
        out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def test_requirements_pin_every_runtime_dependency_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pinned = pins()
    for dep in project["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pinned, f"requirements.txt does not pin {req.name}"
        assert req.specifier.contains(pinned[name]), (
            f"requirements.txt pins {req.name}=={pinned[name]}, outside {req.specifier}")
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert lines[-1] == ".", "the bridge itself is installed last, after its pinned deps"
    python = (ROOT / ".python-version").read_text(encoding="utf-8").strip()
    assert python == "3.11" and Version(python) in SpecifierSet(project["requires-python"])


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.timeout(600)
def test_installing_from_requirements_alone_gives_a_working_bridge(tmp_path: Path) -> None:
    """As the buildpack does: a clean copy of the repository, ``pip install -r
    requirements.txt`` in a fresh virtualenv (pip's cache of this machine helps), then
    ``bridge check rules.yaml``."""
    app = tmp_path / "app"
    app.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt", ".python-version",
                 "rules.yaml", "Procfile"):
        shutil.copy2(ROOT / name, app / name)
    shutil.copytree(ROOT / "bridge", app / "bridge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    pip = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", "-r", "requirements.txt"],
                         cwd=app, capture_output=True, text=True, timeout=540)
    if pip.returncode != 0 and not pypi_reachable():
        pytest.skip("no network and the packages are not in pip's cache:\n" + pip.stderr[-500:])
    assert pip.returncode == 0, pip.stderr[-3000:]
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    check = subprocess.run([str(bin_dir / "bridge"), "check", "rules.yaml"], cwd=app, env=env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("rules.yaml: OK: "), check.stdout
    # what was installed is what requirements.txt pins (nothing more resolved on the side)
    freeze = subprocess.run([str(bin_dir / "python"), "-m", "pip", "freeze",
                             "--exclude", "alert-sms-bridge"], capture_output=True, text=True,
                            timeout=60)
    installed = {canonicalize_name(Requirement(line).name): Version(line.split("==")[1])
                 for line in freeze.stdout.splitlines() if "==" in line}
    assert installed == pins()
    # the package carries its page's files (templates, scripts, styles, icon)
    icon = subprocess.run([str(bin_dir / "python"), "-c",
                           "import bridge.web, pathlib; print((pathlib.Path(bridge.web.__file__)"
                           ".parent / 'static' / 'favicon.ico').stat().st_size)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert icon.returncode == 0 and int(icon.stdout) > 0, icon.stderr
