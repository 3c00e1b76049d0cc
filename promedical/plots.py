"""Plotly figures: GRPO training curves, live in a notebook and saved as HTML in the workspace."""
from __future__ import annotations

import json
from pathlib import Path

from .files import atomic_write_text

# (panel title, [(log key, legend name)])
CURVE_PANELS = (
    ("Reward and its components", [("rubric/reward", "reward"), ("rubric/s1", "S1 proficiency"),
                                   ("rubric/s2", "S2 bonus"), ("rubric/s3", "S3 expected vetoes")]),
    ("Veto rate and groups without signal", [("rubric/veto_rate", "veto rate"),
                                             ("frac_reward_zero_std", "groups with equal rewards")]),
    ("KL to the reference", [("kl", "KL")]),
    ("Completion length (tokens)", [("completions/mean_length", "mean length")]),
)


def curves_figure(history: list[dict]):
    """A 2x2 figure of the GRPO log rows (each a TRL log dict with a ``step``)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=2, subplot_titles=[title for title, _ in CURVE_PANELS])
    for k, (_, series) in enumerate(CURVE_PANELS):
        row, col = divmod(k, 2)
        for key, name in series:
            points = [(h["step"], h[key]) for h in history if key in h]
            fig.add_scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers", name=name,
                            row=row + 1, col=col + 1)
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=620, title="GRPO training", legend=dict(orientation="h", y=-0.12))
    return fig


def rm_loss_figure(history: list[dict]):
    """The reward model's loss and its terms per step (rows of reward/train_log.json "history")."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for key, name in (("loss", "total"), ("bt", "Bradley-Terry (pairs)"), ("bce", "pointwise BCE"),
                      ("contrast", "within-response contrasts")):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            fig.add_scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers", name=name)
    fig.update_layout(title="Reward-model training loss", xaxis_title="step", yaxis_title="loss", height=380)
    return fig


def write_html(fig, path: str | Path) -> Path:
    """Self-contained HTML (plotly.js inlined: the report opens offline), written atomically."""
    return atomic_write_text(path, fig.to_html(include_plotlyjs=True, full_html=True))


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def live_curves(html_path: str | Path, *, display: bool | None = None):
    """A TrainerCallback that redraws the curves after every log (in place, in a notebook) and
    rewrites ``html_path``."""
    from transformers import TrainerCallback

    class LiveCurves(TrainerCallback):
        def __init__(self):
            self.history: list[dict] = []
            self.handle = None
            self.display = in_notebook() if display is None else display

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "rubric/reward" not in logs:
                return
            self.history.append({"step": state.global_step, **logs})
            fig = curves_figure(self.history)
            write_html(fig, html_path)
            if self.display:
                from IPython.display import display as show

                # a raw mime bundle: plotly's own display hook ignores display_id and would add a new figure
                bundle = {"application/vnd.plotly.v1+json": json.loads(fig.to_json()), "text/plain": "GRPO curves"}
                if self.handle is None:
                    self.handle = show(bundle, raw=True, display_id=True)
                else:
                    self.handle.update(bundle, raw=True)

    return LiveCurves()


MONITOR_SERIES = (("monitor/train_reward", "training reward (GRPO)"), ("monitor/rm_score", "RM rubric score"),
                  ("monitor/independent_score", "independent rubric score"), ("monitor/gap", "gap (RM - independent)"))
MONITOR_VETO = (("monitor/rm_veto_rate", "RM veto rate"), ("monitor/independent_veto_rate", "independent veto rate"))


def monitor_figure(rows: list[dict]):
    """The reward-hacking monitor (``promedical.monitor``): training reward, RM vs independent rubric
    score and their gap on the probe prompts (left); veto rates by both (right); x = GRPO step."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["Training reward vs independent grader on the probe prompts",
                                                        "Veto rate on the probe prompts"])
    for col, series in ((1, MONITOR_SERIES), (2, MONITOR_VETO)):
        for key, name in series:
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            fig.add_scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers", name=name,
                            row=1, col=col)
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=420, title="Reward-hacking monitor", legend=dict(orientation="h", y=-0.2))
    return fig


# (panel title, metric key in rm_eval.evaluate, key in rm_eval.compare or None)
RM_CURVE_PANELS = (
    ("Pairwise accuracy", "pairwise_accuracy", "pairwise_accuracy"),
    ("Veto F1 (violated = positive)", "veto_f1", "veto_f1"),
    ("Within-response accuracy", "within_response_accuracy", "within_response_accuracy"),
    ("Own - shuffled criterion (pairwise)", "criterion_gap", None),
)


def _value(m: dict | None) -> tuple[float | None, float | None, float | None]:
    """(value, CI low, CI high) of a metric dict {"value", "ci"}; Nones where undefined."""
    if not m or m.get("value") is None:
        return None, None, None
    lo, hi = (m.get("ci") or (None, None))
    return m["value"], lo, hi


def _curve_metric(point: dict, key: str) -> dict | None:
    if key == "criterion_gap":
        return (point.get("criterion_sensitivity") or {}).get("all", {}).get("gap")
    return point.get(key)


def rm_curve_figure(points: dict):
    """The reward model's held-out learning curve: ``points`` = {step: rm_eval.evaluate(...) metrics, with
    "vs_base" = rm_eval.compare(base, trained) from step 1 on}. A 2x2 figure: pairwise accuracy, veto F1,
    within-response accuracy and the own - shuffled criterion gap, each with its 95% CI (error bars),
    and trained - base with its paired CI where the comparison exists. An undefined value (F1 with
    nothing flagged) is left out of its trace."""
    from plotly.subplots import make_subplots

    steps = sorted(points, key=int)
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for t, _, _ in RM_CURVE_PANELS])
    for k, (title, key, diff) in enumerate(RM_CURVE_PANELS):
        row, col = divmod(k, 2)
        series = [("held-out value", lambda p: _curve_metric(p, key), "#1f77b4")]
        if diff:
            series.append(("trained - base (paired CI)", lambda p: (p.get("vs_base") or {}).get(diff), "#d62728"))
        for name, get, color in series:
            xs, ys, up, down = [], [], [], []
            for s in steps:
                v, lo, hi = _value(get(points[s]))
                if v is None:
                    continue
                xs.append(int(s))
                ys.append(v)
                up.append(hi - v if hi is not None else 0.0)
                down.append(v - lo if lo is not None else 0.0)
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name, showlegend=k == 0,
                            line=dict(color=color), row=row + 1, col=col + 1,
                            error_y=dict(type="data", symmetric=False, array=up, arrayminus=down))
        fig.add_hline(y=0, line=dict(color="grey", width=1, dash="dot"), row=row + 1, col=col + 1)
    fig.update_xaxes(title_text="training step")
    fig.update_layout(height=640, title="Reward model on held-out gold candidates: learning curve",
                      legend=dict(orientation="h", y=-0.12))
    return fig
