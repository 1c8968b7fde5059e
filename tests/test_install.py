"""The package as a user installs it: a quiet build, and a wheel whose commands work outside the repository."""

from __future__ import annotations

import os
import re
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

# What a new user reads as "something is broken" in the build's output.
NOISE = re.compile(r"deprecat|would be ignored|absent from the `packages`|SetuptoolsWarning", re.IGNORECASE)


@pytest.fixture(scope="session")  # not module: the long tests run first (conftest.py), this module's others later
def wheel(tmp_path_factory) -> tuple[Path, str]:
    """The wheel pip builds from this checkout (isolated build, as `pip install .` does), and the build's output."""
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheel, = out.glob("vaebench-*.whl")
    return wheel, proc.stdout + proc.stderr


@pytest.mark.long(4)
def test_build_prints_no_deprecation_or_ignored_package_warnings(wheel):
    _, output = wheel
    noisy = [line for line in output.splitlines() if NOISE.search(line)]
    assert not noisy, "\n".join(noisy[:10])


def test_wheel_ships_every_module_and_config(wheel):
    path, _ = wheel
    names = set(zipfile.ZipFile(path).namelist())
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "vaebench").rglob("*.py")}
    configs = {"vaebench/conf/" + p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert not (sources | configs) - names, sorted((sources | configs) - names)


@pytest.mark.slow  # a venv, an install and three command starts: about 25 s on 2 cores
def test_installed_wheel_commands_work_outside_the_checkout(wheel, tmp_path):
    """`pip install .` into a fresh venv: the commands run from site-packages, with conf/ from the wheel.

    The venv borrows this environment's installed dependencies through a .pth line (no download, no second
    torch), which adds the directory to sys.path but runs none of its .pth hooks: the editable install of the
    checkout stays out of reach, so the code that runs is the wheel's."""
    path, _ = wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    own_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    (own_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", "-q", str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(python), "-c", "import vaebench.cli as c; print(c.__file__); print(c.conf_dir())"],
                           cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    module, conf = where.stdout.split()
    assert Path(module).is_relative_to(own_site) and Path(conf) == own_site / "vaebench" / "conf", where.stdout
    help_ = subprocess.run([str(venv / "bin" / "vaebench"), "--help"], cwd=tmp_path, capture_output=True, text=True,
                           env=env, timeout=120)
    assert help_.returncode == 0, help_.stderr
    for group in ("model", "optimizer", "data", "trainer"):
        assert f"{group}:" in help_.stdout, help_.stdout
    agg = subprocess.run([str(venv / "bin" / "vaebench-aggregate"), "--help"], cwd=tmp_path, capture_output=True,
                         text=True, env=env, timeout=120)
    assert agg.returncode == 0 and "PATH" in agg.stdout, agg.stderr
    embed = subprocess.run([str(venv / "bin" / "vaebench-embed"), "--help"], cwd=tmp_path, capture_output=True,
                           text=True, env=env, timeout=120)
    assert embed.returncode == 0 and "MATRIX" in embed.stdout, embed.stderr


def test_make_install_reinstalls_torch_when_TORCH_changes(tmp_path):
    """Issue 16: `make install TORCH=torch==2.5.1` said "Nothing to be done" once .venv existed."""
    venv = tmp_path / "venv"

    def plan(*args: str) -> str:  # what make would run (-n: nothing runs)
        proc = subprocess.run(["make", "-n", "-C", str(REPO), "install", f"VENV={venv}", *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert 'pip install -q "torch==2.13.0"' in plan()  # a fresh clone: venv, torch, vaebench
    (venv / "bin").mkdir(parents=True)
    stamps = [line.split()[-1] for line in plan().splitlines() if line.startswith("touch") and ".torch-" in line]
    for path in (venv / "bin" / "python", Path(stamps[0]), venv / "bin" / "vaebench"):  # as after that install
        path.touch()
    assert "pip install" not in plan()
    assert 'pip install -q "torch==2.5.1"' in plan("TORCH=torch==2.5.1")
    assert "-m venv" not in plan("TORCH=torch==2.5.1")  # the venv stays; torch and vaebench are installed again


def test_install_commands_name_the_clone_not_a_published_package():
    """Issue 16: `pip install "vaebench[cluster]"` assumes a package on PyPI; from a clone it is -e ".[cluster]"."""
    texts = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "conf").rglob("*.yaml"),
             *(REPO / "vaebench").rglob("*.py")]
    published = re.compile(r"""pip install ["']?vaebench\[""")
    assert not [p.name for p in texts if published.search(p.read_text())]
