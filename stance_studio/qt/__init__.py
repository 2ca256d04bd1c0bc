"""The Stance Studio desktop app (PySide6 + pyqtgraph).

Widgets only bind controls to core objects; every long job (load, train, blend,
generate, analyse) runs on the single model worker thread in :mod:`.workers`.
"""
