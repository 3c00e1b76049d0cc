"""Stage 03's figures: the reward model's training losses and its held-out learning curve."""
from __future__ import annotations


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
