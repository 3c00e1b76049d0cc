"""Stage 04's figures: GRPO curves (live in a notebook, saved as HTML) and the hacking monitor."""
from __future__ import annotations

import json
from pathlib import Path

from promedical.core.plots import in_notebook, write_html

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


def live_curves(html_path: str | Path, *, display: bool | None = None):
    """A TrainerCallback that redraws the curves after every log (in place, in a notebook) and
    rewrites ``html_path``; a resumed run draws the steps its checkpoint logged too."""
    from transformers import TrainerCallback

    class LiveCurves(TrainerCallback):
        def __init__(self):
            self.handle = None
            self.display = in_notebook() if display is None else display

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "rubric/reward" not in logs:
                return
            fig = curves_figure([h for h in state.log_history if "rubric/reward" in h])
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


MONITOR_SERIES = (("train_reward", "training reward (GRPO)"), ("rm_score", "RM rubric score"),
                  ("independent_score", "independent rubric score"), ("gap", "gap (RM - independent)"))


MONITOR_VETO = (("rm_veto_rate", "RM veto rate"), ("independent_veto_rate", "independent veto rate"))


def monitor_figure(rows: list[dict]):
    """The reward-hacking monitor (``promedical.policy.monitor``; rows of ``monitor_rows``): training reward,
    RM vs independent rubric score and their gap on the probe prompts (left); veto rates by both (right);
    x = GRPO step."""
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
