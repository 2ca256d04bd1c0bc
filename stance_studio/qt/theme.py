"""Light and dark looks: the Fusion style with one palette each, a short style sheet
(``resources/style/app.qss``) and matching pyqtgraph colours.

Plot colours for module kinds and side-by-side columns come from here too, so every
panel uses the same colour for the same thing.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("light", "dark")

# Okabe–Ito, distinguishable for colour-blind readers, then a few extras.
SERIES = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#999999", "#7F3C8D", "#11A579"]

_LIGHT = {
    "window": "#f4f5f7", "base": "#ffffff", "alt": "#f0f1f4", "text": "#1d2330", "muted": "#667085",
    "button": "#eceef2", "highlight": "#2f6fde", "highlight_text": "#ffffff", "border": "#d0d5dd",
    "plot_bg": "#ffffff", "plot_fg": "#344054", "good": "#1a7f37", "bad": "#c4320a", "tooltip": "#ffffe8",
}
_DARK = {
    "window": "#1f2329", "base": "#16191e", "alt": "#23272e", "text": "#e6e8eb", "muted": "#98a2b3",
    "button": "#2b3038", "highlight": "#4c8dff", "highlight_text": "#ffffff", "border": "#3a404a",
    "plot_bg": "#16191e", "plot_fg": "#d0d5dd", "good": "#4ac26b", "bad": "#ff7b59", "tooltip": "#2b3038",
}

_current = "light"


def colors(theme: str | None = None) -> dict[str, str]:
    return _DARK if (theme or _current) == "dark" else _LIGHT


def current() -> str:
    return _current


def series_color(index: int) -> str:
    return SERIES[index % len(SERIES)]


# palette role -> colour key of the theme
_ROLES = {
    "Window": "window", "WindowText": "text", "Base": "base", "AlternateBase": "alt", "ToolTipBase": "tooltip",
    "ToolTipText": "text", "Text": "text", "Button": "button", "ButtonText": "text", "Highlight": "highlight",
    "HighlightedText": "highlight_text", "PlaceholderText": "muted", "Link": "highlight",
}


def _palette(c: dict[str, str]) -> QPalette:
    pal = QPalette()
    role = QPalette.ColorRole
    for name, key in _ROLES.items():
        pal.setColor(getattr(role, name), QColor(c[key]))
    for r in (role.Text, role.WindowText, role.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, r, QColor(c["muted"]))
    return pal


def style_sheet(c: dict[str, str]) -> str:
    from stance_studio.core.errors import StanceStudioError
    from stance_studio.core.resources import resource

    try:
        template = resource("style", "app.qss").read_text(encoding="utf-8")
    except (StanceStudioError, OSError):
        return ""
    for key, value in sorted(c.items(), key=lambda kv: -len(kv[0])):
        template = template.replace("@" + key, value)
    return template


def apply_theme(app: QApplication, theme: str) -> None:
    """Switch the whole app (widgets and plots) to ``theme``."""
    import pyqtgraph as pg

    global _current
    _current = theme if theme in THEMES else "light"
    c = colors()
    app.setStyle("Fusion")
    app.setPalette(_palette(c))
    app.setStyleSheet(style_sheet(c))
    pg.setConfigOptions(background=c["plot_bg"], foreground=c["plot_fg"], antialias=True)
    for widget in app.allWidgets():
        if isinstance(widget, pg.GraphicsView):
            style_plot(widget)


def style_plot(view) -> None:
    """Give an existing pyqtgraph widget the current theme's background, axes and titles.

    pyqtgraph reads its colour options only when a plot is made, so a theme switch
    restyles the plots that already exist here.
    """
    import pyqtgraph as pg

    c = colors()
    view.setBackground(c["plot_bg"])
    scene = view.scene()
    for item in scene.items() if scene is not None else []:
        if not isinstance(item, pg.PlotItem):
            continue
        for name in item.axes:
            axis = item.getAxis(name)
            axis.setPen(c["plot_fg"])
            axis.setTextPen(c["plot_fg"])
        title = item.titleLabel
        if title.text and title.text.strip():
            title.setText(title.text, color=c["plot_fg"])
