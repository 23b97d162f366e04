"""Stage ``edits`` (one DVC ``foreach`` item per generator): the layer-group study.

``python -m clipbridge.stages.edits <generator>`` reads params ``edits``
(:class:`clipbridge.config.EditsConfig`; the generator's layer groups from ``edits.groups``),
``device`` and the profile's LPIPS variant, loads
``data/models/generator-<generator>.pt`` and runs :func:`clipbridge.edits.study.run_study`: W+ groups
for StyleGAN2 generators, BatchNorm channel-scale groups for the DCGAN. Outputs (committed,
written atomically):

- ``results/edits/<generator>/metrics.json``: settings, counts, per (group, magnitude) means with
  95% bootstrap CIs on the common face set (raw and per unit of RMS change) and face-loss rates
  (also as ``face_loss``), the four verdicts with their paired group differences under both
  normalizations (``verdicts``; ``verdicts_by_normalization``: per_rms, raw, combined) (DVC metrics);
- ``results/edits/<generator>/per_image.csv``: one row per edited image;
- ``results/edits/<generator>/magnitude.csv``: mean of every measure per magnitude and group
  (DVC plot, x = magnitude, columns ``<measure>_<group>``);
- ``results/figures/edits_{strip,heatmap,magnitude}_<generator>.pdf``;
- ``paper/generated/edits_<generator>.tex``: macros (verdicts per claim, combined and per
  normalization, paired differences with intervals, samples, face-loss rates, key numbers; see
  :func:`tex`) and two booktabs tables as macros (``\\<Prefix>Table``, ``\\<Prefix>VerdictTable``),
  prefix ``macro_name('edits', generator)``.
"""

from __future__ import annotations

import math
import re

import torch.nn.functional as F

from clipbridge import paths, registry
from clipbridge.config import EditsConfig
from clipbridge.edits.measures import MEASURE, MEASURES
from clipbridge.edits.offsets import STRIP_MAX_SIDE, groups_for
from clipbridge.edits.study import run_study
from clipbridge.edits.verdicts import CLAIMS, NORMALIZATIONS
from clipbridge.io import finite, seed_everything, write_csv, write_json, write_text
from clipbridge.models.lpips import build_lpips
from clipbridge.report import figures
from clipbridge.report.latex import escape, fmt, macro, macro_name
from clipbridge.stages import run

CURVE_MEASURES = ("pose", "shape", "skin", "background", "age", "identity", "lowfreq", "lpips")
TEX_LABELS = {"yaw": r"$|\Delta$yaw$|$", "pitch": r"$|\Delta$pitch$|$", "age": r"$|\Delta$age$|$"}
TEX_UNITS = {"dE": r"$\Delta E$", "1 - cos": r"1 $-$ cos", "[-1,1]": r"on $[-1,1]$"}


def out_dir(generator: str):
    return paths.RESULTS / "edits" / generator


def main(p, generator: str) -> None:
    """``p``: config.Params (``edits``, ``device`` and the profile's LPIPS variant)."""
    cfg: EditsConfig = p.edits
    seed_everything(cfg.seed)
    G = registry.load_generator(paths.generator_file(generator)).to(p.device)
    groups = groups_for(cfg, generator, G)
    lpips = build_lpips(p.active.lpips, cfg.lpips_seed, p.device)
    res = run_study(G, groups, cfg, lpips, unit_scale=cfg.scale_of(generator))
    names = list(groups)
    mag = res["settings"]["verdict_magnitude"]
    settings = {**res["settings"], "generator": generator, "lpips_variant": lpips.label, "device": str(p.device),
                "seconds": round(res["seconds"], 1)}

    d = out_dir(generator)
    # NaN -> None and floats to 6 significant digits (JSON has no NaN)
    write_json(d / "metrics.json", finite({"settings": settings, "n": res["n"], "summary": res["summary"],
                                           "verdicts": res["verdicts"],
                                           "verdicts_by_normalization": res["verdicts_by_normalization"],
                                           "verdicts_by_magnitude": res["verdicts_by_magnitude"],
                                           "face_loss": res["face_loss"]}, digits=6))
    write_csv(d / "per_image.csv", [{k: _round(v) for k, v in r.items()} for r in res["rows"]])
    write_csv(d / "magnitude.csv", magnitude_rows(res["summary"], names, cfg.magnitudes))

    figures.setup_style()
    label = f"{generator} ({settings['space']})"
    strip = res["strip"]
    if strip.shape[-1] > STRIP_MAX_SIDE:
        g, s = strip.shape[:2]
        strip = F.interpolate(strip.flatten(0, 1), size=STRIP_MAX_SIDE, mode="area").unflatten(0, (g, s))
    figures.edits_strip(strip, [f"{g} [{groups[g][0]},{groups[g][1]})" for g in names], cfg.strip_show, cfg.strip_step,
                        paths.FIGURES / f"edits_strip_{generator}.pdf",
                        f"{label}: one face, one random offset per group (step {cfg.strip_step:g})")
    values, annot, columns = heatmap_matrix(res["summary"], names, mag)
    figures.edits_heatmap(values, names, columns, paths.FIGURES / f"edits_heatmap_{generator}.pdf",
                          f"{label}, magnitude {mag:g}: what each group changes", "share of the column's maximum",
                          annot)
    curves = {m: {g: [(mm, *(res["summary"][g][f"{mm:g}"]["raw"][m][k] for k in ("mean", "lo", "hi")))
                      for mm in cfg.magnitudes] for g in names} for m in CURVE_MEASURES}
    unit = f"offset magnitude (unit: {settings['magnitude_unit']})"
    figures.edits_magnitude(curves, {m: _label(m, settings["lpips_variant"]) for m in CURVE_MEASURES},
                            paths.FIGURES / f"edits_magnitude_{generator}.pdf", f"{label}: effect vs offset size",
                            unit)
    write_text(paths.GENERATED / f"edits_{generator}.tex", tex(generator, res, settings))
    print(f"edits {generator}: " + ", ".join(f"{c}: {v['verdict']}" for c, v in res["verdicts"].items())
          + f" ({res['seconds']:.0f} s)")


# --------------------------------------------------------------------------------------------
# Outputs


def _round(v):
    if isinstance(v, float):
        return float(f"{v:.6g}") if math.isfinite(v) else v
    return v


def column(group: str) -> str:
    """Group name as a CSV column suffix: letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9]+", "_", group).strip("_")


def magnitude_rows(summary: dict, groups: list[str], magnitudes: list[float]) -> list[dict]:
    """One row per magnitude: ``magnitude`` and ``<measure>_<group>`` means (NaN where none)."""
    rows = []
    for m in magnitudes:
        row = {"magnitude": m}
        for meas in MEASURES:
            for g in groups:
                row[f"{meas.key}_{column(g)}"] = _round(summary[g][f"{m:g}"]["raw"][meas.key]["mean"])
        rows.append(row)
    return rows


def heatmap_matrix(summary: dict, groups: list[str], magnitude: float) -> tuple[list, list, list]:
    """(values in [0, 1], cell texts, column labels) of the group x measure heatmap.

    Effect measures: change per unit of RMS change (``per_rms``, the verdicts' ranking); low-frequency share, LPIPS
    and RMS change: raw means. Each column is divided by its maximum over groups (1 = the group
    that moves that measure most); the cell text is that share.
    """
    mk = f"{magnitude:g}"
    cols, labels = [], []
    for m in MEASURES:
        key = "per_rms" if m.effect else "raw"
        cols.append([summary[g][mk][key][m.key]["mean"] for g in groups])
        labels.append(f"{m.label} per RMS" if m.effect else m.label)
    values = [[math.nan] * len(cols) for _ in groups]
    for j, col in enumerate(cols):
        finite = [v for v in col if math.isfinite(v)]
        top = max(finite) if finite else math.nan
        for i, v in enumerate(col):
            values[i][j] = v / top if math.isfinite(v) and top > 0 else (0.0 if math.isfinite(v) else math.nan)
    annot = [[f"{v:.2f}" if math.isfinite(v) else "" for v in row] for row in values]
    return values, annot, labels


def _label(key: str, lpips_label: str) -> str:
    m = MEASURE[key]
    name = lpips_label if key == "lpips" else m.label
    return f"{name} ({m.unit})" if m.unit else name


def _cell(v: dict, digits: int) -> str:
    if not math.isfinite(v["mean"]):
        return "--"
    ci = f" [{fmt(v['lo'], digits)}, {fmt(v['hi'], digits)}]" if math.isfinite(v["lo"]) else ""
    return fmt(v["mean"], digits) + ci


NORM_TEX = {"per_rms": "PerRms", "raw": "Raw"}
NORM_LABEL = {"per_rms": "per unit RMS", "raw": "raw"}


def _pct(v: dict) -> str:
    return fmt(100 * v["mean"], 0) + r"\%" if math.isfinite(v["mean"]) else "--"


def _diff(d: dict, digits: int) -> str:
    """A paired difference as ``$+1.23`` thin space ``[0.50, 2.00]$`` (math mode: signs), ``--`` where not measured."""
    if not math.isfinite(d["mean"]):
        return "--"
    ci = f"\\ [{d['lo']:.{digits}f}, {d['hi']:.{digits}f}]" if math.isfinite(d["lo"]) else ""
    return f"${d['mean']:+.{digits}f}{ci}$"


def _digits(key: str, norm: str) -> int:
    d = MEASURE[key].digits
    return max(d - 1, 1) if norm == "per_rms" else d


def _evidence(v: dict) -> str:
    """One claim's evidence as a phrase: per part, the paired difference to the rival under both
    normalizations and the common face set it was measured on."""
    out = []
    for key, p in v["parts"].items():
        diffs = "; ".join(f"{NORM_LABEL[n]} {_diff(p[n]['vs'][p[n]['rival']], _digits(key, n))} vs "
                          f"{escape(p[n]['rival'])}" for n in NORMALIZATIONS if p[n]["rival"] is not None)
        out.append(f"{_tex_label(MEASURE[key], '')}: {diffs or '--'} ({p['sample']['faces']} faces, "
                   f"{p['sample']['slots']} face--draw pairs)")
    return "; ".join(out) or "--"


def _claim_macros(P: str, claim, v: dict) -> list[str]:
    """Macros of one claim: verdict (combined; per normalization; agree), group, face-loss rate of
    the claimed group, evidence phrase, and per part its sample, rival, difference and verdict per
    normalization."""
    name = macro_name("verdict", claim.key)
    out = [macro(P + name, v["verdict"]), macro(P + name + "Group", escape(v["group"] or "--")),
           macro(P + name + "Agree", "agree" if v["agree"] else "disagree"),
           macro(P + name + "Evidence", _evidence(v))]
    out += [macro(P + name + NORM_TEX[n], v[n]) for n in NORMALIZATIONS]
    losses = [p["sample"]["face_loss_rate"] for p in v["parts"].values() if p["sample"]["face_loss_rate"]]
    out.append(macro(P + name + "FaceLoss", _pct(losses[0]) if losses else "--"))
    for key in claim.measures:
        p = v["parts"].get(key)
        part = P + name + macro_name(key)
        out += [macro(part + "Faces", str(p["sample"]["faces"]) if p else "--"),
                macro(part + "Slots", str(p["sample"]["slots"]) if p else "--")]
        for n in NORMALIZATIONS:
            rival = p[n]["rival"] if p else None
            out += [macro(part + NORM_TEX[n], p[n]["verdict"] if p else "not tested"),
                    macro(part + "Rival" + NORM_TEX[n], escape(rival or "--")),
                    macro(part + "Diff" + NORM_TEX[n], _diff(p[n]["vs"][rival], _digits(key, n)) if rival else "--")]
    return out


def tex(generator: str, res: dict, settings: dict) -> str:
    """Macros and tables of one generator's study (all numbers from ``res``).

    Per claim ``<C>`` (``PoseHair``, ``Features``, ``Skin``, ``Background``) and part measure ``<M>``:
    ``Verdict<C>`` (combined: supported only where both normalizations agree), ``Verdict<C>PerRms`` /
    ``Raw``, ``Verdict<C>Agree`` (agree / disagree), ``Verdict<C>Group``, ``Verdict<C>FaceLoss`` (the
    claimed group's face-loss rate), ``Verdict<C>Evidence`` (a phrase: differences, intervals,
    sample), ``Verdict<C><M>{Faces,Slots}`` (common face set), ``Verdict<C><M>{PerRms,Raw}`` (part
    verdict), ``Verdict<C><M>Rival{PerRms,Raw}``, ``Verdict<C><M>Diff{PerRms,Raw}`` (paired
    difference claimed - rival with its 95% interval). ``FaceLoss<group>``, ``FaceLossMax`` and
    ``FaceLossMaxGroup`` at the verdict magnitude; ``FaceLossFinest`` / ``FinestGroup`` for the last group.
    """
    P = macro_name("edits", generator)
    summary, verdicts = res["summary"], res["verdicts"]
    groups = list(settings["group_order"])
    mag = settings["verdict_magnitude"]
    mk = f"{mag:g}"
    out = [f"% Generated by `dvc repro edits@{generator}` (src/clipbridge/stages/edits.py). Do not edit.\n"]
    n = res["n"]
    found = [summary[g][mk]["face_found_rate"]["mean"] for g in groups]
    out += [
        macro(P + "Generator", escape(generator)),
        macro(P + "Space", escape(settings["space"])),
        macro(P + "LpipsLabel", escape(settings["lpips_variant"])),
        macro(P + "NFaces", str(n["faces"])),
        macro(P + "NFacesWithFace", str(n["faces_with_face"])),
        macro(P + "NDraws", str(n["draws"])),
        macro(P + "NImages", str(n["images"])),
        macro(P + "NExcluded", str(n["excluded_face_rows"])),
        macro(P + "NLost", str(n["lost_face_rows"])),
        macro(P + "Magnitudes", ", ".join(f"{m:g}" for m in settings["magnitudes"])),
        macro(P + "VerdictMagnitude", f"{mag:g}"),
        macro(P + "MagnitudeUnit", escape(settings["magnitude_unit"])),
        macro(P + "StripStep", f"{settings['strip']['step']:g}"),
        macro(P + "StripSteps", str(settings["strip"]["steps"])),
        macro(P + "StripShow", ", ".join(str(k) for k in settings["strip"]["show"])),
        macro(P + "LowpassCycles", fmt(settings["lowpass_half_power_cycles_per_image"], 1)),
        macro(P + "Bootstrap", str(settings["bootstrap"])),
        macro(P + "Seconds", fmt(settings["seconds"], 0)),
        macro(P + "FaceFoundRate", fmt(sum(found) / len(found), 2) if all(map(math.isfinite, found)) else "--"),
    ]
    if settings["w_std_mean"] is not None:
        out.append(macro(P + "WStdMean", fmt(settings["w_std_mean"], 3)))
    loss = {g: summary[g][mk]["face_loss_rate"] for g in groups}
    out += [macro(P + macro_name("face_loss", g), _pct(loss[g])) for g in groups]
    worst = max((g for g in groups if math.isfinite(loss[g]["mean"])), key=lambda g: loss[g]["mean"], default=None)
    out += [macro(P + "FaceLossMax", _pct(loss[worst]) if worst else "--"),
            macro(P + "FaceLossMaxGroup", escape(worst or "--")),
            macro(P + "FaceLossFinest", _pct(loss[groups[-1]])),          # groups run coarse to fine
            macro(P + "FinestGroup", escape(groups[-1]))]
    supported = sum(v["verdict"] == "supported" for v in verdicts.values())
    out.append(macro(P + "NSupported", str(supported)))
    for claim in CLAIMS:
        out += _claim_macros(P, claim, verdicts[claim.key])
    for g in groups:
        for m in MEASURES:
            val = summary[g][mk]["raw"][m.key]["mean"]
            out.append(macro(P + macro_name(m.key, g), fmt(val, m.digits) if math.isfinite(val) else "--"))
    out.append(macro(P + "Table", _table(summary, settings, groups, mk)))
    out.append(macro(P + "VerdictTable", _verdict_table(verdicts, mk)))
    return "".join(out)


def _table(summary: dict, settings: dict, groups: list[str], mk: str) -> str:
    ranges = settings["groups"]
    head = " & ".join(f"{escape(g)} $[{ranges[g][0]},{ranges[g][1]})$" for g in groups)
    lines = [f"\\begin{{tabular}}{{l{'c' * len(groups)}}}", "\\toprule",
             f"Measure (magnitude {mk}; common face set) & {head} \\\\", "\\midrule"]
    for m in MEASURES:
        label = _tex_label(m, settings["lpips_variant"])
        unit = f" ({TEX_UNITS.get(m.unit, escape(m.unit))})" if m.unit else ""
        lines.append(f"{label}{unit} & " + " & ".join(_cell(summary[g][mk]["raw"][m.key], m.digits) for g in groups)
                     + " \\\\")
    lines.append("face found after edit & " + " & ".join(_cell(summary[g][mk]["face_found_rate"], 2) for g in groups)
                 + " \\\\")
    lines.append("face lost by the edit & " + " & ".join(_cell(summary[g][mk]["face_loss_rate"], 2) for g in groups)
                 + " \\\\")
    lines.append("\\midrule")
    ref = summary[groups[0]][mk]["per_rms"]["pose"]["from"]
    lines.append(f"\\multicolumn{{{len(groups) + 1}}}{{l}}{{change per unit of RMS change from magnitude {ref:g} "
                 f"(with the raw change, ranks the verdicts)}} \\\\")
    for key in dict.fromkeys(k for c in CLAIMS for k in c.measures):
        m = MEASURE[key]
        lines.append(f"{_tex_label(m, '')} per RMS & "
                     + " & ".join(_cell(summary[g][mk]["per_rms"][key], max(m.digits - 1, 1)) for g in groups)
                     + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines)


def _tex_label(m, lpips_label: str) -> str:
    if m.key == "lpips":
        return escape(lpips_label)
    return TEX_LABELS.get(m.key, escape(m.label))


def _verdict_table(verdicts: dict, mk: str) -> str:
    """One row per (claim, measure): sample, paired difference claimed - rival [95% CI] and verdict
    per normalization; the claim's combined verdict on its first row."""
    head = " & ".join(f"{NORM_LABEL[n]}: claimed $-$ rival & verdict" for n in NORMALIZATIONS)
    lines = ["\\begin{tabular}{lllc" + "ll" * len(NORMALIZATIONS) + "l}", "\\toprule",
             f"Report's claim & Group & Measure & Faces / pairs & {head} & Verdict (both) \\\\", "\\midrule"]
    for claim in CLAIMS:
        v = verdicts[claim.key]
        first = f"{escape(claim.text)} & {escape(v['group'] or '--')}"
        if not v["parts"]:
            lines.append(f"{first} & -- & -- & " + " & ".join(["--", "--"] * len(NORMALIZATIONS))
                         + f" & {v['verdict']} \\\\")
        for i, (key, p) in enumerate(v["parts"].items()):
            cells = " & ".join(
                f"{_diff(p[n]['vs'][p[n]['rival']], _digits(key, n)) if p[n]['rival'] else '--'}"
                f"{' vs ' + escape(p[n]['rival']) if p[n]['rival'] else ''} & {p[n]['verdict']}" for n in NORMALIZATIONS)
            lines.append(f"{first if i == 0 else ' & '} & {_tex_label(MEASURE[key], '')} & "
                         f"{p['sample']['faces']} / {p['sample']['slots']} & {cells} & "
                         f"{v['verdict'] if i == 0 else ''} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines)


if __name__ == "__main__":
    run(main)
