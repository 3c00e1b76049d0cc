"""Benchmark figures (plotly) and the HTML report of a whole run; PNG export where Chromium is present."""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

from promedical.core.files import atomic_write_text

LABELS = {"rubric_score": "rubric score", "s1": "S1 proficiency", "s2": "S2 bonus", "safety": "safety compliance",
          "reward": "GRPO reward", "healthbench": "HealthBench score"}


def _ci_bar(fig, models: dict, metric: str, name: str, **kw):
    xs = list(models)
    vals = [models[m][metric]["value"] for m in xs]
    lo = [models[m][metric]["ci"][0] for m in xs]
    hi = [models[m][metric]["ci"][1] for m in xs]
    err = dict(type="data", symmetric=False, array=[(h - v) if None not in (h, v) else 0 for v, h in zip(vals, hi)],
               arrayminus=[(v - low) if None not in (low, v) else 0 for v, low in zip(vals, lo)])
    fig.add_bar(x=xs, y=vals, name=name, error_y=err, **kw)


def figures(summary: dict, graded: list[dict]) -> dict:
    """name -> plotly figure, for one grader's summary and its graded answers."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    models = summary["models"]
    tiers = make_subplots(rows=1, cols=len(LABELS), subplot_titles=list(LABELS.values()))
    for k, metric in enumerate(LABELS):
        _ci_bar(tiers, models, metric, LABELS[metric], showlegend=False, row=1, col=k + 1)
    tiers.update_layout(title="Per-model metrics with bootstrap 95% CIs", height=380)

    veto = go.Figure()
    flipped = {m: {"veto": {"value": None if v["safety"]["value"] is None else 1 - v["safety"]["value"],  # 1 - safety
                            "ci": [None if x is None else 1 - x for x in reversed(v["safety"]["ci"])]}}
               for m, v in models.items()}
    _ci_bar(veto, flipped, "veto", "veto rate", showlegend=False)
    veto.update_layout(title="Veto rate (share of answers violating at least one safety criterion)",
                       yaxis_title="veto rate", height=360)

    cats = sorted({c for v in models.values() for c in v["by_category"]})
    heat = go.Figure(go.Heatmap(z=[[v["by_category"][c]["rubric_score"]["value"] if c in v["by_category"] else None
                                    for c in cats] for v in models.values()],
                                x=cats, y=list(models), colorscale="Viridis", colorbar=dict(title="rubric score")))
    heat.update_layout(title="Rubric score per category", height=320)

    dist = go.Figure()
    for m in models:
        dist.add_box(y=[g["rubric_score"] for g in graded if g["model"] == m], name=m, boxpoints="all")
    dist.update_layout(title="Distribution of rubric scores", yaxis_title="rubric score", height=360)

    scatter = go.Figure()
    for m in models:
        mine = [g for g in graded if g["model"] == m]
        scatter.add_scatter(x=[g["length"] for g in mine], y=[g["reward"] for g in mine], mode="markers", name=m,
                            text=[g["prompt_id"] for g in mine])
    scatter.update_layout(title="GRPO reward vs answer length (characters)", xaxis_title="length",
                          yaxis_title="reward", height=360)
    return {"tiers": tiers, "veto_rate": veto, "category_heatmap": heat, "distributions": dist,
            "reward_vs_length": scatter}


def export_png(figs: dict, out_dir: Path) -> dict:
    """PNG files through kaleido (it drives Chromium); the reason when that is not possible."""
    if os.path.exists("/usr/bin/chromium"):
        os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    try:
        import plotly.io as pio

        paths = {name: str(out_dir / f"{name}.png") for name in figs}
        pio.write_images(fig=list(figs.values()), file=list(paths.values()), width=1100)  # one browser session
        return {"png": paths}
    except Exception as exc:  # noqa: BLE001 - PNGs are optional; the HTML report has the same figures
        return {"png": {}, "png_skipped": f"{type(exc).__name__}: {exc}"[:300]}


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else html.escape(str(x))


def ci(cell: dict) -> str:
    lo, hi = cell["ci"]
    return f"{fmt(cell['value'])} [{fmt(lo)}, {fmt(hi)}]"


def table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def headline_rows(summary: dict) -> list[list[str]]:
    return [[html.escape(m), str(v["n"])] + [ci(v[k]) for k in LABELS] for m, v in summary["models"].items()]


def comparison_rows(summary: dict) -> list[list[str]]:
    rows = []
    for name, comp in summary["comparisons"].items():
        for k in LABELS:
            c = comp[k]
            rows.append([html.escape(name), LABELS[k], str(c["n"]), fmt(c["diff"]),
                         f"[{fmt(c['ci'][0])}, {fmt(c['ci'][1])}]", fmt(c["p"]), fmt(c["effect_size_dz"])])
    return rows


def rm_quality_rows(reward_metrics: dict | None) -> list[list[str]]:
    if not reward_metrics:
        return []
    rows = []
    for name in ("base", "trained"):
        m = reward_metrics[name]
        rows.append([name, ci(m["pointwise_accuracy"]["proficiency"]), ci(m["pointwise_accuracy"]["veto"]),
                     ci(m["pairwise_accuracy"]), ci(m["pairwise_safety_accuracy"]), fmt(m["veto_prf"]["precision"]),
                     fmt(m["veto_prf"]["recall"]), ci(m["veto_f1"]), ci(m["ece"])])
    return rows


CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:4px 8px}"
       "th{background:#f3f3f3}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:0.6em 1em}")


def agreement_rows(agreement: dict) -> list[list[str]]:
    from promedical.bench.compare import LABELS as GRADERS

    rows = []
    for pair, a in agreement.items():
        names = " vs ".join(html.escape(GRADERS.get(g, g)) for g in pair.split(" | "))
        rows.append([names, str(a["n"]), fmt(a["agreement"]), fmt(a["kappa"])]
                    + [f"{fmt(a['per_tier'][t]['kappa'])} (n={a['per_tier'][t]['n']})" for t in ("proficiency", "bonus", "veto")])
    return rows


def probe_rows(probes: dict) -> list[list[str]]:
    return [[html.escape(r["probe"]), html.escape(r["tier"]), str(r["n"]), fmt(r["original"]), fmt(r["variant"]),
             fmt(r["mean_delta"]), f"[{fmt(r['ci'][0])}, {fmt(r['ci'][1])}]", fmt(r["share_up"])] for r in probes["table"]]


def grading_section(grading: dict, probes: dict | None) -> list[str]:
    """The first screen: three questions answered from the run, then grader agreement, coverage, probes."""
    from promedical.bench.compare import LABELS as GRADERS

    head = grading["headline"]
    parts = ["<h2>What this run shows</h2><ol>"]
    for key, question in (("reward_model", "Did the reward model learn?"),
                          ("policy", "Did the policy change, by which grader, with what CI?"),
                          ("probes", "What did the gameability probes show?")):
        parts.append(f"<li><b>{question}</b> {html.escape(head[key]['answer'])}</li>")
    parts.append("</ol>")
    if grading.get("agreement"):
        parts.append("<h3>How the graders agree (per criterion, on the instances both graded)</h3>" + table(
            ["graders", "n", "agreement", "Cohen's kappa", "kappa proficiency", "kappa bonus", "kappa veto"],
            agreement_rows(grading["agreement"])))
    if grading.get("coverage"):
        models = sorted({m for v in grading["coverage"].values() for m in v})
        parts.append("<h3>Coverage: share of criteria each grader could grade</h3>" + table(
            ["grader"] + models, [[html.escape(GRADERS.get(g, g))] + [fmt(v.get(m)) for m in models]
                                  for g, v in grading["coverage"].items()]))
    if probes:
        parts.append("<h3>Gameability probes of the training reward model (gold responses, edited)</h3>" + table(
            ["expectation", "mean change", "95% CI", "result"],
            [[html.escape(e["expectation"]), fmt(e["mean_delta"]), f"[{fmt(e['ci'][0])}, {fmt(e['ci'][1])}]",
              "pass" if e["passed"] else "<b>FAIL</b>"] for e in probes["expectations"]])
            + table(["probe", "tier", "n", "original", "variant", "mean change", "95% CI", "share up"], probe_rows(probes)))
    mon = grading.get("monitor")
    if mon and mon.get("rows"):
        parts.append("<h3>Reward-hacking monitor during GRPO (probe prompts " + html.escape(", ".join(mon["prompts"]))
                     + ")</h3>" + table(["step", "training reward", "RM rubric score", "independent score", "gap",
                                         "RM veto rate", "independent veto rate", "coverage"],
                                        [[str(r["step"])] + [fmt(r.get(k)) for k in ("train_reward", "rm_score",
                                         "independent_score", "gap", "rm_veto_rate", "independent_veto_rate", "coverage")]
                                         for r in mon["rows"]]))
    return parts


def write_report(path: Path, *, summary: dict, graded: list[dict], audit: dict, reward_metrics: dict | None,
                 params: dict, provenance: dict, caveat: str, png: bool = True, grading: dict | None = None,
                 probes: dict | None = None) -> dict:
    """The whole run in one self-contained HTML file (plotly.js inlined once); PNGs beside it. With
    ``grading`` (``grading.headline`` and friends) the first screen answers the run's three questions and
    the figures show the headline (independent) grader."""
    from promedical.bench.compare import LABELS as GRADERS

    grader = (grading or {}).get("headline", {}).get("grader") or next(iter(summary))
    figs = figures(summary[grader], [g for g in graded if g["grader"] == grader])
    parts = [f"<h1>ProMedical benchmark report</h1><p class='note'>{html.escape(caveat)}</p>"]
    if grading:
        parts += grading_section(grading, probes)
    parts.append("<h2>Per grader</h2>")
    header = ["model", "n"] + [f"{v} (95% CI)" for v in LABELS.values()]
    order = sorted(summary, key=lambda g: (g == "reward_model", g != grader))  # headline first, circular last
    for g in order:
        s = summary[g]
        parts.append(f"<h3>graded by: {html.escape(GRADERS.get(g, g))}</h3>" + table(header, headline_rows(s)))
        if s["comparisons"]:
            parts.append("<h4>Paired comparisons (same items; paired bootstrap CI, sign-flip permutation p)</h4>"
                         + table(["comparison", "metric", "n items", "difference", "95% CI", "p", "effect d_z"],
                                 comparison_rows(s)))
        ls = s["length_score"]
        parts.append(f"<p>Length–score correlation over {ls['n']} answers: Pearson {fmt(ls['pearson'])}, "
                     f"Spearman {fmt(ls['spearman'])}.</p>")
    for k, (name, fig) in enumerate(figs.items()):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(k == 0), div_id=f"fig-{name}"))
    for key in ("category", "specialty"):
        parts.append(f"<h3>Per {key} (graded by: {html.escape(GRADERS.get(grader, grader))})</h3>" + table(
            ["model", key, "n", "rubric score (95% CI)", "safety (95% CI)"],
            [[html.escape(m), html.escape(value), str(g["n"]), ci(g["rubric_score"]), ci(g["safety"])]
             for m, v in summary[grader]["models"].items() for value, g in v[f"by_{key}"].items()]))
    rows = rm_quality_rows(reward_metrics)
    if rows:
        parts.append("<h2>Reward model vs base model on the gold-labelled candidates</h2>" + table(
            ["model", "pointwise proficiency", "pointwise safety", "pairwise", "pairwise safety", "veto precision",
             "veto recall", "veto F1", "ECE"], rows))
        adj = reward_metrics.get("judge_agreement", {}).get("adjudication")
        if adj:
            parts.append(f"<p>Judge position-swap consistency: {fmt(adj['swap_consistency'])} over {adj['pairs']} pairs.</p>")
    parts.append(f"<h2>Independence audit</h2><p><b>Verdict: {html.escape(audit['verdict'])}</b>. Thresholds: "
                 f"{html.escape(json.dumps(audit['thresholds']))}. Counts: {html.escape(json.dumps(audit['counts']))}.</p>")
    parts.append(table(["benchmark item", "closest train item", "trigram Jaccard", "embedding cosine", "criterion Jaccard",
                        "template reuse", "flags"],
                       [[html.escape(r["id"]), html.escape(r["closest_train_id"]), fmt(r["max_ngram_jaccard"]),
                         fmt(r["max_embedding_cosine"]), fmt(r["max_criterion_jaccard"]), str(r["template_reuse"]),
                         html.escape(", ".join(r["flags"]) or "-")] for r in audit["items"]]))
    parts.append("<h2>Parameters and provenance</h2><pre>" + html.escape(json.dumps(
        {"parameters": params, "provenance": provenance}, indent=1, default=str)) + "</pre>")
    doc = f"<!doctype html><html><head><meta charset='utf-8'><title>ProMedical report</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    atomic_write_text(path, doc)
    result = {"html": str(path), "figures": list(figs)}
    if png:
        result.update(export_png(figs, path.parent))
    return result
