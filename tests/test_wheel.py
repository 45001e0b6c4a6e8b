"""The production install: a wheel built from this tree, installed (not editable) into a fresh
venv, migrates and checks from an unrelated directory against an embedded Postgres, because SQL,
migrations and templates ship inside the package; without its migrations it fails loudly."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ctripd.dev.devnet import TEST_MNEMONIC, AnvilProcess

ROOT = Path(__file__).resolve().parent.parent
TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def run(*command: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns the venv's directory.

    The runtime dependencies come from the test venv through a path entry appended after the
    fresh venv's own site-packages (so the wheel's `ctripd` wins, and the test venv's editable
    install, hooked in by its own .pth files, is not seen): installing them again would need the
    network and a minute, and prove nothing about the package.
    """
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "ctripd", source / "ctripd", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        work / "dist",
        source,
        cwd=work,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("ctripd-*.whl")
    venv = work / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    added = run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "-q",
        wheel,
        cwd=work,
    )
    assert added.returncode == 0, added.stderr
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work)
    (Path(site.stdout.strip()) / "ctripd-test-deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    return venv


def write_config(directory: Path, anvil: AnvilProcess) -> Path:
    directory.mkdir()
    mnemonic = directory / "mnemonic"
    mnemonic.write_text(TEST_MNEMONIC + "\n")
    mnemonic.chmod(0o600)
    (directory / "chains.yaml").write_text(
        f"chains:\n- {{name: anvil, chain_id: 31337, rpc: ['{anvil.url}'],"
        f" native: {{symbol: ETH, decimals: 18}}, treasury: '{TREASURY}'}}\n"
    )
    path = directory / "ctripd.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{directory / "state"}"\n'
        f'[database]\ndsn = ""\n[wallet]\nmnemonic_file = "{mnemonic}"\n'
    )
    return path


def test_wheel_migrates_and_checks_from_any_directory(
    installed: Path, tmp_path: Path, anvil: AnvilProcess
) -> None:
    config = write_config(tmp_path / "etc", anvil)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ctripd = installed / "bin" / "ctripd"

    where = run(
        installed / "bin" / "python", "-c", "import ctripd; print(ctripd.__file__)", cwd=elsewhere
    )
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr

    migrated = run(ctripd, "--config", config, "migrate", cwd=elsewhere)
    assert migrated.returncode == 0, migrated.stderr
    ids = sorted(
        p.name.removesuffix(".sql")
        for p in (ROOT / "ctripd" / "migrations").glob("*.sql")
        if not p.name.endswith(".rollback.sql")
    )
    assert migrated.stdout == f"applied {len(ids)} migration(s): {', '.join(ids)}\n"
    again = run(ctripd, "--config", config, "migrate", cwd=elsewhere)
    assert again.stdout.strip() == "applied 0 migration(s)", again.stdout + again.stderr

    checked = run(ctripd, "--config", config, "check", cwd=elsewhere)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok   migrations: all applied" in checked.stdout
    assert checked.stdout.strip().endswith("all checks passed")


def test_install_without_migrations_fails_loudly(
    installed: Path, tmp_path: Path, anvil: AnvilProcess
) -> None:
    """A broken install must never report "applied 0 migration(s)" over an empty schema."""
    config = write_config(tmp_path / "etc", anvil)
    site = run(
        installed / "bin" / "python", "-c", "import ctripd; print(ctripd.__file__)", cwd=tmp_path
    )
    migrations = Path(site.stdout.strip()).parent / "migrations"
    hidden = migrations.with_name("migrations.hidden")
    migrations.rename(hidden)
    try:
        result = run(installed / "bin" / "ctripd", "--config", config, "migrate", cwd=tmp_path)
    finally:
        hidden.rename(migrations)
    assert result.returncode == 1
    assert result.stderr.startswith("ctripd: no migrations in "), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
