"""Qt test set-up: offscreen platform, settings in a temporary INI file, every
QMessageBox captured instead of blocking, and unexpected Qt warnings fail the test."""

from __future__ import annotations

import gc
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytest.importorskip("PySide6")

from PySide6.QtCore import QtMsgType, qInstallMessageHandler  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

# Messages the offscreen platform prints on every machine; they say nothing about us.
_BENIGN = ("This plugin does not support", "propagateSizeHints", "QFont::", "Populating font family aliases",
           "fontconfig", "QStandardPaths", "XDG_RUNTIME_DIR")


@pytest.fixture(scope="session", autouse=True)
def _collect_garbage_in_the_gui_thread():
    """As in the app: Python's cyclic collector would otherwise run in whichever thread
    happens to allocate, and a Qt object it frees from a worker thread corrupts Qt."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.fixture(autouse=True)
def _collect_after_each_test():
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def _qt_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("STANCE_STUDIO_SETTINGS", str(tmp_path / "settings.ini"))
    yield


@pytest.fixture(autouse=True)
def qt_warnings():
    """Collect Qt warnings; a test fails if any that is not benign was printed."""
    seen: list[str] = []

    def handler(kind, _context, message):
        if kind in (QtMsgType.QtWarningMsg, QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg):
            if not any(b in message for b in _BENIGN) and len(seen) < 20:
                seen.append(message)

    previous = qInstallMessageHandler(handler)
    yield seen
    qInstallMessageHandler(previous)
    assert not seen, f"Qt printed warnings: {seen}"


class MessageBoxes:
    """Records every QMessageBox call and answers questions with ``answer``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.answer = QMessageBox.StandardButton.Yes

    def _record(self, kind):
        def show(parent, title, text, *args, **kwargs):
            self.calls.append((kind, title, text))
            return self.answer if kind == "question" else QMessageBox.StandardButton.Ok

        return show

    def of(self, kind: str) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] == kind]


@pytest.fixture(autouse=True)
def boxes(monkeypatch) -> MessageBoxes:
    rec = MessageBoxes()
    for kind in ("warning", "critical", "information", "question"):
        monkeypatch.setattr(QMessageBox, kind, staticmethod(rec._record(kind)))
    monkeypatch.setattr(QMessageBox, "about", staticmethod(lambda *a, **k: rec.calls.append(("about", a[1], a[2]))))
    return rec


@pytest.fixture
def session(qtbot):
    from stance_studio.qt.session import Session
    from stance_studio.qt.settings import Settings

    s = Session(Settings())
    yield s
    s.shutdown()


@pytest.fixture
def loaded(session, tiny):
    """A session with the tiny model loaded."""
    session.host.set_base(tiny)
    return session


@pytest.fixture
def write_stance(deltas_factory):
    """``write_stance(library, base, name, **kw)`` saves a random stance made on ``base``."""
    from stance_studio.core.checkpoints import make_checkpoint

    def write(library, base, name, seed=0, rank=None, kinds=("q_proj", "v_proj"), scale=0.05, stance=None):
        ckpt = make_checkpoint(name, deltas_factory(base, kinds=kinds, rank=rank, seed=seed, scale=scale), base,
                               training={"method": "full", "loss": [2.0, 1.5, 1.2]}, metrics={"retention": 0.9},
                               stance=stance)
        return library.save(ckpt)

    return write
