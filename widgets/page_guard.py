"""What the page may change: every message a browser sends to the review app's widgets is checked in the
kernel (``PageGuard``). A control accepts only its own input (a text's value, a dropdown's index, a tab's
selection), nothing while disabled or hidden; anything else is refused, the page is sent the kernel's
value again and the app shows one line. Who the reviewer is never comes from the page."""
from __future__ import annotations

import sqlite3

import ipywidgets as W

from promedical.core.rubric import RubricError
from promedical.review.team import TeamError
from promedical.rubrics.store import StaleRevisionError, StoreError


def one_line(exc: BaseException) -> str:
    """An exception as one line for the page (a damaged database says so, not as a raw sqlite3 error)."""
    if isinstance(exc, sqlite3.DatabaseError):
        text = f"the review database cannot be read ({exc})"
    elif isinstance(exc, (TeamError, StoreError, RubricError, StaleRevisionError, ValueError, KeyError, OSError)):
        text = str(exc).strip("'\"") if isinstance(exc, KeyError) else str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:400]


# what the page may set, per control type (exact types: a subclass gets nothing until listed)
PAGE_INPUTS = {W.Text: ("value",), W.Textarea: ("value",), W.FloatText: ("value",), W.ToggleButton: ("value",),
               W.Dropdown: ("index",), W.ToggleButtons: ("index",), W.Tab: ("selected_index",),
               W.Output: ("outputs",)}  # an Output's page syncs back what it displays; the kernel never reads it


def _hidden(w) -> bool:
    layout = getattr(w, "layout", None)
    return isinstance(layout, W.Layout) and layout.display == "none"


def _label(w) -> str:
    css = [c for c in getattr(w, "_dom_classes", ()) if c.startswith("pm-")]
    return css[0] if css else type(w).__name__


class PageGuard:
    """Checks every message the page sends to the widgets under :meth:`watch` (see the module's notes).

    ``say(text, error)`` shows a line; ``refused`` keeps what was refused (for tests and the log).
    """

    def __init__(self, say, identity: str | None = None):
        self.say, self.identity = say, identity
        self.refused: list[tuple[str, tuple[str, ...]]] = []

    @staticmethod
    def inputs(w) -> tuple[str, ...]:
        """The traits the page may set on ``w`` now: its input, unless disabled or hidden."""
        if getattr(w, "disabled", False) or _hidden(w):
            return ()
        return PAGE_INPUTS.get(type(w), ())

    def watch(self, root) -> None:
        """Guard ``root`` and every widget under it (children, layouts, styles); call again after a rebuild."""
        stack, seen = [root], set()
        while stack:
            w = stack.pop()
            if not isinstance(w, W.Widget) or id(w) in seen:
                continue
            seen.add(id(w))
            if getattr(w, "_pm_guard", None) is not self:
                self._install(w)
            stack += [getattr(w, n, None) for n in ("layout", "style")]
            if isinstance(w, W.Box):
                stack += list(w.children)

    def _install(self, w) -> None:
        base_set_state = w.set_state
        w._pm_guard = self
        w.set_state = lambda state: self._state(w, base_set_state, state)
        w._handle_custom_msg = lambda content, buffers: self._custom(w, content)

    def _refuse(self, w, keys: tuple[str, ...], why: str) -> None:
        self.refused.append((_label(w), keys))
        who = f" (you are {self.identity}, as the app was started)" if self.identity else ""
        self.say(f"refused a change from the page: {_label(w)} {why}{who}", True)

    def _state(self, w, base_set_state, state) -> None:
        if not isinstance(state, dict):
            return self._refuse(w, (), "got a malformed update")
        allowed = self.inputs(w)
        take = {k: v for k, v in state.items() if k in allowed}
        refused = tuple(k for k in state if k not in allowed)
        if refused:
            self._refuse(w, refused, f"({', '.join(map(str, refused))[:80]}) cannot be changed here")
            back = [k for k in refused if k in w.keys]
            if back:
                w.send_state(back)  # the page shows the kernel's value again
        if take:
            self.run(lambda: base_set_state(take))

    def _custom(self, w, content) -> None:
        if isinstance(w, W.Button) and isinstance(content, dict) and content.get("event") == "click":
            if w.disabled or _hidden(w):
                return self._refuse(w, ("click",), "is not available now")
            self.run(lambda: [cb(w) for cb in list(w._click_handlers.callbacks)])
            return
        self._refuse(w, ("custom",), "takes no message")

    def run(self, fn) -> None:
        """Run a handler; an exception becomes one line in the app (never a traceback on the page)."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - whatever it is, the page shows one line
            self.say(f"error: {one_line(exc)}", True)
