"""The house: CLI entry points, version, info, and a ruff-clean tree."""

from __future__ import annotations

import shutil
import subprocess
import sys

from typer.testing import CliRunner

import amoseg
from amoseg.cli.main import app
from tests.conftest import REPO

runner = CliRunner()


def test_version_flag():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert amoseg.__version__ in result.output


def test_help_lists_info():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "info" in result.output


def test_info_reports_torch_and_threads():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "torch" in result.output and "threads" in result.output


def test_python_dash_m_runs_same_cli():
    out = subprocess.run(
        [sys.executable, "-m", "amoseg", "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"amoseg {amoseg.__version__}"


def test_tree_is_ruff_clean():
    ruff = shutil.which("ruff") or str(REPO / ".venv" / "bin" / "ruff")
    out = subprocess.run([ruff, "check", str(REPO)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
