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
