"""The encoder study in the paper (stage ``encoders``): its figure, its table and its generated text.

Figures follow :mod:`clipbridge.report.figures`' style; every sentence states its sample and reads a
paired difference as better or worse only where its 95% interval excludes 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter, ScalarFormatter

from clipbridge import config, registry, stats
from clipbridge.bridge.study import FRESH_PREFIX, LEARNED
from clipbridge.models.encoders import PIXELS_SIZE, encoder_spec
from clipbridge.report.figures import PALETTE, save
from clipbridge.report.latex import escape, fmt, interval, macro, verdict

# The registry's label of rn50-random names its role elsewhere (the pretrained profile's stand-in
# for OpenAI's weights); in the study it is a row of its own.
STUDY_LABELS = {"rn50-random": "RN50 CLIP, random init"}


def label_of(row: str) -> str:
    """A study row's name in the table, figure and text."""
    fresh = row.startswith(FRESH_PREFIX)
    base = row.removeprefix(FRESH_PREFIX)
    name = "learned encoder (CNN, end to end)" if base == LEARNED else STUDY_LABELS.get(base) or encoder_spec(base).label
    return f"{name}, fresh faces" if fresh else name


def encoder_study(table: list[dict], curves: dict[str, list[dict]], floor: tuple[str, float], out: Path,
                  title: str) -> None:
    """Left: reconstruction PSNR of each embedding encoder's bridge (mean +- std over seeds) against
    how much of the latent a linear probe recovers from its embedding (R^2), with its nearest-
    neighbour retrieval (open marker) and, as lines, the learned encoder and the strongest floor.
    Right: validation MSE per step of each row's first seed, the kept step marked.

    ``table``: one generator's rows of results/encoders/table.csv; ``curves``: row -> curve rows
    ``{step, val_rgb}``; ``floor``: (name, PSNR on the same test faces)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(7.0, 2.7))
    points = [r for r in table if present(r.get("probe_r2")) is not None and not r["row"].startswith(FRESH_PREFIX)]
    for i, r in enumerate(points):
        c = PALETTE[i % len(PALETTE)]
        ax.errorbar(r["probe_r2"], r["psnr"], yerr=present(r["psnr_std"]),
                    fmt="o", color=c, capsize=3, label=r["row"])
        ax.plot(r["probe_r2"], r["nn_psnr"], marker="o", mfc="none", color=c, ls="none")
    lines = [(r["row"], r["psnr"]) for r in table if present(r.get("probe_r2")) is None] + [(f"floor: {floor[0]}", floor[1])]
    for j, (name, value) in enumerate(lines):
        ax.axhline(value, ls="--" if j < len(lines) - 1 else ":", lw=1, color="0.3" if j == len(lines) - 1 else
                   PALETTE[(len(points) + j) % len(PALETTE)], label=name)
    ax.set_xlabel("ridge probe $R^2$ (embedding $\\to$ latent, test faces)")
    ax.set_ylabel("PSNR (dB), test faces")
    ax.legend(frameon=False, fontsize=5.5, loc="lower right")
    for i, (row, curve) in enumerate(curves.items()):
        steps = [c["step"] for c in curve]
        vals = [c["val_rgb"] for c in curve]
        bx.plot(steps, vals, lw=1, color=PALETTE[i % len(PALETTE)], label=row)
        best = min(range(len(vals)), key=vals.__getitem__)
        bx.plot(steps[best], vals[best], marker="|", ms=8, color=PALETTE[i % len(PALETTE)])
    bx.set_xscale("log")
    bx.xaxis.set_major_formatter(ScalarFormatter())
    bx.xaxis.set_minor_formatter(NullFormatter())
    bx.set_xlabel("step")
    bx.set_ylabel("validation MSE on [-1, 1]")
    bx.legend(frameon=False, fontsize=5.5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    save(fig, out)


def table_tex(p: config.Params, table: list[dict]) -> str:
    metric = escape(p.active.metric)
    lines = ["\\begin{tabular}{llcccccccc}\n\\toprule\n",
             f"generator & encoder & PSNR $\\uparrow$ & SSIM $\\uparrow$ & {metric} $\\downarrow$ & identity "
             f"$\\uparrow$ & probe $R^2$ & NN PSNR & gap closed [95\\% CI] & kept step \\\\\n\\midrule\n"]
    for r in table:
        stall = "$^\\dagger$" if r["n_stalled"] else ""
        same = "$^\\ddagger$" if r["identity_same_network"] else ""
        lines.append(
            f"{escape(r['generator'])} & {escape(r['label'])}{stall} & {pm(r['psnr'], r['psnr_std'], 2)} & "
            f"{fmt(r['ssim'], 3)} & {fmt(r['lpips'], 3)} & {fmt(r['identity'], 2)}{same} & "
            f"{fmt(present(r['probe_r2']), 2)} & {fmt(present(r['nn_psnr']), 2)} & "
            f"{fmt(present(r['gap_closed']), 0, 100)}\\% [{fmt(present(r['gap_lo']), 0, 100)}, {fmt(present(r['gap_hi']), 0, 100)}] & "
            f"{r['best_step']:.0f} \\\\\n")
    lines.append("\\bottomrule\n\\end{tabular}\n")
    return "".join(lines)


def pm(mean: float, std: float, digits: int) -> str:
    """``mean $\\pm$ std``; the mean alone where there is no std (one seed)."""
    return fmt(present(mean), digits) + ("" if present(std) is None else f" $\\pm$ {fmt(std, digits)}")


def seeds_phrase(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def present(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _label(rows: dict, name: str) -> str:
    return escape(rows[name]["label"]) if name in rows else escape(name)


def finding_text(p: config.Params, g: str, rows: dict[str, dict], c: dict) -> str:
    """The section's answer, from the numbers: what a better encoder and a better bridge add over
    the report's setup, how far each axis moves PSNR, what the learned encoder, fresh faces and
    retrieval add. Every interval is over the test faces, widened by the seeds' spread."""
    head, parts = c["headline_row"], []
    at = c["spans"].get(f"at_{p.ablate.steps}") or {}
    if at:
        e, b, d = at["encoder_axis"], at["bridge_axis"], at["difference"]
        parts.append(f"At the ablations' budget of {p.ablate.steps} steps, on the {e['n_faces']} test faces of "
                     f"\\texttt{{{escape(g)}}} (per-face PSNR averaged over each row's non-stalled seeds; "
                     f"{stats.CI_PERCENT}\\% intervals over the faces, widened by the spread over seeds):")
        if "headroom_difference" in at:
            he, hb, hd = at["encoder_headroom"], at["bridge_headroom"], at["headroom_difference"]
            parts.append(
                f"over the report's own setup (the best row re-chosen in every resample), the best other encoder adds "
                f"{interval(he, 2, unit='dB')} ({_label(rows, he['best'])}) and the best other depth or width of the "
                f"bridge {interval(hb, 2, unit='dB')} ({escape(hb['best'])}); difference {interval(hd, 2, unit='dB')}, "
                f"{verdict(hd, 'so a better encoder has more to give than a better bridge', 'so a better bridge has more to give than a better encoder')}.")
        parts.append(
            f"{'Across' if 'headroom_difference' in at else 'across'} all rows, worse ones included, swapping the "
            f"encoder under the report's bridge moves PSNR by {interval(e, 2, unit='dB')} (from {_label(rows, e['worst'])} "
            f"to {_label(rows, e['best'])}) and the bridge's depth and width move it by {interval(b, 2, unit='dB')} "
            f"({len(b['rows'])} cells, from {escape(b['worst'])} to {escape(b['best'])}); encoder axis minus bridge "
            f"axis: {interval(d, 2, unit='dB')}, "
            f"{verdict(d, 'so the encoder moves PSNR further than the bridge does', 'so the bridge moves PSNR further than the encoder does')}.")
    kept = c["spans"].get("kept") or {}
    steps = [r["best_step"] for r in rows.values()]
    if kept:
        parts.append(
            f"\n\nTrained until validation MSE stops improving (kept steps {min(steps):.0f}--{max(steps):.0f}; "
            f"{sum(bool(r['plateaued']) for r in rows.values())} of {len(rows)} rows plateaued within "
            f"{p.encoders.max_steps} steps), the encoder axis spans {interval(kept['encoder_axis'], 2, unit='dB')}.")
    if LEARNED in rows:
        r, d = rows[LEARNED], c["vs_headline"][LEARNED]
        parts.append(
            f"The learned encoder ({r['parameters'] / 1e6:.1f}M parameters, trained end to end from the image on the "
            f"same {r['faces_seen']:,} faces at learning rate {r['lr']:g}, chosen on the validation faces) reaches "
            f"{pm(r['psnr'], r['psnr_std'], 2)}~dB ({seeds_phrase(r['n_seeds'])}"
            f"{'' if r['plateaued'] else f', its validation MSE still falling at the {p.encoders.max_steps:,}-step bound'}); "
            f"minus the {_label(rows, head)} bridge, per face: {interval(d, 2, unit='dB')}, {verdict(d, 'better', 'worse')}"
            + "".join(f"; at an equal {step:,} steps: {interval(e, 2, unit='dB')}, {verdict(e, 'better', 'worse')}"
                      for step, e in c["learned_at"].items()) + ".")
    for name, d in c["fresh_vs_fixed"].items():
        parts.append(("\n\n" if name == next(iter(c["fresh_vs_fixed"])) else "") +
                     f"Trained on fresh faces at every step ({rows[name]['faces_seen']:,} faces seen), "
                     f"{_label(rows, name.removeprefix(FRESH_PREFIX))} minus the same model on the fixed faces "
                     f"(seed{'s' if len(d['seeds']) != 1 else ''} {', '.join(map(str, d['seeds']))}, per face): "
                     f"{interval(d, 2, unit='dB')}, {verdict(d, 'better', 'worse')}.")
    rep = c["reproduces"]
    said = [f"{what} bridges at step {r['steps']:,} (largest per-face PSNR difference {fmt(r['max_abs_psnr_difference'], 4)}~dB, "
            f"{seeds_phrase(r['n_seeds'])})" for what, r in (("the headline", rep.get("headline")),
                                                            ("the ablations' reference", rep.get("ablation"))) if r]
    if said:
        parts.append(f"\n\nCheck: the study's {_label(rows, head)} run reproduces " + " and ".join(said) + ".")
    nn = [f"{_label(rows, k)} {interval(d, 2, unit='dB')}" for k, d in c["vs_nearest_neighbour"].items()]
    if nn:
        parts.append("Each bridge minus retrieving the latent of the training face whose embedding is nearest by "
                     "cosine, per face: " + "; ".join(nn) + ".")
    return " ".join(parts)


def brief(ci: dict) -> str:
    """A paired difference in a word or three (the abstract's parentheses): better or worse only
    where its interval excludes 0."""
    return verdict(ci, "better", "worse") if ci["excludes_zero"] else "its interval includes 0"


def short_name(encoder: str) -> str:
    """``CLIP`` for a CLIP of the registry, else the encoder's table label (the abstract's word)."""
    return "CLIP" if encoder in registry.ENCODERS else escape(encoder_spec(encoder).label)


def abstract_text(p: config.Params, c: dict) -> str:
    """The abstract's answer, in numbers: what a better encoder and a better bridge add over the
    report's setup at the ablations' budget (which has more to give only where the interval of
    their difference excludes 0), then the learned encoder and fresh faces against the headline
    bridge. Intervals over the test faces, widened by the seeds' spread."""
    at = c["spans"].get(f"at_{p.ablate.steps}") or {}
    head = f"{short_name(c['headline_row'])} bridge"
    parts = []
    if "headroom_difference" in at:
        d = at["headroom_difference"]
        he, hb = at["encoder_headroom"], at["bridge_headroom"]
        parts.append(f"at {p.ablate.steps} training steps, the best other encoder ({escape(label_of(he['best']))}) adds "
                     f"{interval(he, 2, unit='dB')} PSNR to the report's setup and the best other depth or width of "
                     f"the bridge ({escape(hb['best'])}) {interval(hb, 2, unit='dB')} ({stats.CI_PERCENT}\\% intervals "
                     f"over the {he['n_faces']} test faces and the seeds; difference {interval(d, 2, unit='dB')}: "
                     f"{verdict(d, 'the encoder, not the bridge, limits it', 'the bridge, not the encoder, limits it')})")
    if LEARNED in c["vs_headline"]:
        d = c["vs_headline"][LEARNED]
        parts.append(f"a CNN trained end to end from the image minus the {head}, per face: "
                     f"{interval(d, 2, unit='dB')} ({brief(d)})")
    fresh = [(k.removeprefix(FRESH_PREFIX), d) for k, d in c["fresh_vs_fixed"].items()]
    if fresh:
        parts.append("fresh faces at every step instead of the fixed ones: " + ", ".join(
            f"{'CNN' if k == LEARNED else head if k == c['headline_row'] else escape(k)} "
            f"{interval(d, 2, unit='dB')} ({brief(d)})" for k, d in fresh))
    return "; ".join(parts)


# How the paper's method paragraph names each encoder row: what it is, not what it knows (the
# table's probe R^2 and PSNR say that). A row without a phrase here is named by its table label.
PHRASES = {
    "clip-offline": "the offline CLIP (the headline)",
    "clip-offline-random": "the offline CLIP's own architecture at random initialization (the architecture "
                           "without its training)",
    "rn50-random": "an open\\_clip RN50 at random initialization (another architecture, untrained)",
    "dlib-face": "dlib's pretrained face descriptor",
    "pixels-16": f"the image itself shrunk to {PIXELS_SIZE}$\\times${PIXELS_SIZE} pixels (layout and colour, "
                 "nothing learned)",
}


def encoders_text(names: list[str]) -> str:
    """The encoder rows of ``encoders.encoders`` in the paper's words, in params order, joined by
    semicolons (a sentence fragment for the method paragraph)."""
    return "; ".join(PHRASES.get(n) or escape(encoder_spec(n).label) for n in names)


def figures_tex(generators: list[str]) -> str:
    """``paper/generated/encoders_figures.tex``: the section's figure for each study generator
    (the first is ``fig:encoders``)."""
    return "% Generated by `dvc repro encoders` (src/clipbridge/stages/encoders.py). Do not edit.\n" + "".join(
        "\\begin{figure}[t]\n\\centering\n% made by clipbridge.report.encoders.encoder_study\n"
        f"\\includegraphics[width=\\linewidth]{{encoders/encoder_study_{g}.pdf}}\n"
        f"\\caption{{Encoder study on \\texttt{{{escape(g)}}}. Left: each encoder's bridge PSNR on the test faces "
        "(mean $\\pm$ std over seeds; open marker: nearest-neighbour retrieval) against the ridge probe's $R^2$; "
        "lines: the learned encoder, the fresh-face rows and the strongest floor. Right: validation MSE of each "
        "row's first seed; a tick marks the kept step.}\n"
        f"\\label{{fig:encoders{'' if i == 0 else '-' + g}}}\n\\end{{figure}}\n"
        for i, g in enumerate(generators))


def tex(p: config.Params, table: list[dict], texts: dict[str, tuple[str, str]]) -> str:
    """``paper/generated/encoders.tex``: the table, the section's settings and its generated text."""
    cfg, g = p.encoders, p.encoders.generators[0]
    out = ["% Generated by `dvc repro encoders` (src/clipbridge/stages/encoders.py). Do not edit.\n",
           macro("StudyTable", "%\n" + table_tex(p, table)),
           macro("StudyGenerator", escape(g)),
           macro("StudySeeds", str(len(cfg.seeds))),
           macro("StudyEvalEvery", str(cfg.eval_every)),
           macro("StudyMinSteps", f"{cfg.min_steps:,}"),
           macro("StudyMaxSteps", f"{cfg.max_steps:,}"),
           macro("StudyPlateauWindow", f"{cfg.plateau_window * 100:g}\\%"),
           macro("StudyPlateauTol", f"{cfg.plateau_tol * 100:g}\\%"),
           macro("StudyEncodersText", encoders_text(cfg.encoders)),
           macro("StudyFindingText", texts[g][0]),
           macro("StudyAbstractText", texts[g][1])]
    return "".join(out)
