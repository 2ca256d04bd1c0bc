"""The core is usable with no Qt: importing every core module loads no Qt binding."""

import pkgutil
import subprocess
import sys

import stance_studio.core


def test_core_never_imports_qt():
    modules = [f"stance_studio.core.{m.name}" for m in pkgutil.iter_modules(stance_studio.core.__path__)]
    assert len(modules) > 10
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "import stance_studio.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'superqt', 'shiboken6'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_import_contracts_hold():
    """pyproject.toml's import-linter contracts: layers, and no import cycles among the modules of
    the core, the command line or the GUI."""
    from pathlib import Path

    import pytest

    pytest.importorskip("importlinter")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                          "lint_imports_command()", "--no-cache"],
                         capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert out.stdout.count("KEPT") >= 5 and "BROKEN" not in out.stdout
