"""Stage ``numbers``: every number the paper's text uses, as macros in paper/generated/numbers.tex,
the main results table (main_table.tex), the CLIP tables (clip_table.tex; clip_attributes.tex,
per attribute), the appendix's reproducibility table (repro_table.tex: dvc.lock hashes of the
committed checkpoints, measured training times) and the parts that name generators
(:mod:`clipbridge.report.sections`: bridge_figures.tex, photo_figure.tex, edits_floats.tex and
the switches and sentences in numbers.tex).
Nothing in the paper is typed by hand.
"""

from __future__ import annotations

import math

from clipbridge import config, paths, stats
from clipbridge.io import finite, md5_of, read_csv, read_json, write_json, write_text
from clipbridge.offline.captions import ATTRIBUTES
from clipbridge.report import sections
from clipbridge.report.figures import method_label
from clipbridge.report.latex import escape, fmt, interval, macro, macro_name, verdict
from clipbridge.stages import run

DIGITS = {"mse": 4, "psnr": 2, "ssim": 3, "lpips": 3, "ms_per_image": 2,
          "identity": 3, "face_found": 2, "age_error": 1, "gender_agree": 2}
YES_NO = {True: "yes", False: "no", None: "undecided"}


def sci(x: float) -> str:
    """``1e-05`` -> ``$10^{-5}$``, ``3e-4`` -> ``$3\\times 10^{-4}$`` (math mode)."""
    e = math.floor(math.log10(x))
    m = round(x / 10 ** e, 6)
    return f"${'' if m == 1 else f'{m:g}' + chr(92) + 'times '}10^{{{e}}}$"


def gen_macro(generator: str) -> str:
    """``sg2-64`` -> ``SgTwoSixFour``: the generator's part of a macro name."""
    return macro_name(generator)


def profile_tex(p: config.Params, prov: dict) -> str:
    enc = prov["encoder"]
    head = prov["generators"][p.headline]
    out = [
        macro("ProfileName", escape(prov["profile"])),
        macro("HeadlineGenerator", escape(p.headline)),
        macro("GeneratorNames", escape(", ".join(p.generators))),
        macro("GeneratorSource", escape(head["source"])),
        macro("GeneratorResolution", str(head["resolution"])),
        macro("EncoderLabel", escape(enc["label"])),
        macro("EncoderEmbedDim", str(enc["embed_dim"])),
        macro("LpipsLabel", escape(prov["lpips"])),
        macro("LpipsMetricLabel", escape(p.active.metric)),
        macro("NTrain", str(p.dataset.n_train)),
        macro("NVal", str(p.dataset.n_val)),
        macro("NTest", str(p.dataset.n_test)),
        macro("BridgeDepth", str(p.train.depth)),
        macro("BridgeWidth", str(p.train.width)),
        macro("BridgeActivation", escape(p.train.activation)),
        macro("BridgeTarget", escape(p.train.target)),
        macro("TrainSteps", str(p.train.steps)),
        macro("TrainBatch", str(p.train.batch)),
        macro("TrainLr", f"{p.train.lr:g}"),
        macro("NSeeds", str(len(p.train.seeds))),
        macro("NOpt", str(p.evaluate.n_opt)),
        macro("CiLevel", f"{stats.CI_PERCENT}\\%"),
        macro("OptSteps", str(p.evaluate.opt.steps)),
        macro("OptLr", f"{p.evaluate.opt.lr:g}"),
        macro("RefineSteps", str(p.evaluate.refine_steps)),
        macro("AblateSteps", str(p.ablate.steps)),
        macro("AblateSeeds", str(len(p.ablate.seeds))),
        macro("ReportLr", sci(p.photos.report_lr)),
        macro("ReportSteps", str(p.photos.report_steps)),
        macro("EncoderPlaceholderNote", "The encoder is a randomly initialized placeholder: its embeddings carry "
                                        "no learned information, so the bridge can only learn the distribution of "
                                        "faces, not the face." if enc["placeholder"] else ""),
    ]
    out.append(macro("ShaEncoder", escape(enc.get("source_sha256", "n/a")[:16])))
    for g in p.generators:
        out.append(macro(f"TrainBatch{gen_macro(g)}", str(p.train.batch_for(g))))
        out.append(macro(f"Sha{gen_macro(g)}", escape(prov["generators"][g]["source_sha256"][:16])))
    return "".join(out)


def photos_tex(g: str, ph: dict) -> str:
    """The real photos: mean PSNR per method, the report baseline's RGB loss before / after (first photo)."""
    G, first = gen_macro(g), ph["photos"][0]
    out = [macro(f"ReportRgbBefore{G}", fmt(ph["report_rgb_before"][first], 5)),
           macro(f"ReportRgbAfter{G}", fmt(ph["report_rgb_after"][first], 5)),
           macro(f"ReportPhoto{G}", escape(first))]
    for method, per_photo in ph["methods"].items():
        psnrs = [v["psnr"] for v in per_photo.values()]
        out.append(macro(macro_name("photo psnr", g, method), fmt(sum(psnrs) / len(psnrs), 2)))
    return "".join(out)


def photos_paragraph(g: str, ph: dict) -> str:
    """What the photos stage measured on one generator, as a sentence: every method's PSNR averaged
    over the photos, and how far the report's one-photo training moved its loss on each photo."""
    w = ph["w_label"]
    mean = {m: sum(v["psnr"] for v in per.values()) / len(per) for m, per in ph["methods"].items()}
    label = {"report_one_photo": "the report's one-photo bridge"}
    listed = ", ".join(f"{escape(label.get(m) or method_label(m, w))} {fmt(v, 2)}~dB" for m, v in mean.items())
    moves = "; ".join(f"{escape(n)} {fmt(ph['report_rgb_before'][n], 5)} $\\to$ {fmt(ph['report_rgb_after'][n], 5)}"
                      for n in ph["photos"])
    return (f"On \\texttt{{{escape(g)}}}, PSNR averaged over the {len(ph['photos'])} photos: {listed}. "
            f"The report's training ({ph['report_steps']} steps, learning rate {sci(ph['report_lr'])}) moved "
            f"its RGB loss (MSE on $[-1,1]$) {moves}.\n")


def faces_phrase(ev: dict) -> str:
    n, total = ev["n_opt"], ev["n_test"]
    return f"all {total} test faces" if n == total else f"the first {n} of the {total} test faces"


def generator_tex(g: str, ev: dict, curve_last: dict) -> str:
    """Macros of one generator's evaluation: every method's metrics, the floors, the comparisons."""
    G = gen_macro(g)
    out = [macro(f"DeviceName{G}", escape(ev["device"])),
           macro(f"TrainSeconds{G}", fmt(curve_last["seconds"], 0)),
           macro(f"FinalValMse{G}", fmt(curve_last["val_rgb"], 4)),
           macro(f"NOpt{G}", str(ev["n_opt"]))]
    for method, vals in ev["methods"].items():
        for key, digits in DIGITS.items():  # n/a where no face was found to measure
            out.append(macro(macro_name(key, g, method), fmt(vals.get(key), digits)))
            if f"{key}_std" in vals:
                out.append(macro(macro_name(key, "std", g, method), fmt(vals[f"{key}_std"], digits)))
    for method, vals in ev["subset"].items():
        out.append(macro(macro_name("psnr", "subset", g, method), fmt(vals["psnr"], 2)))
    c = ev["comparison"]
    floor = c["floor"]
    out += [
        macro(f"Floor{G}", escape(method_label(floor, ev["w_label"]))),
        macro(f"GapClosed{G}", fmt(c[f"gap_closed_bridge_vs_{floor}"]["mean"], 0, 100)),
        macro(f"GapClosedInterval{G}", interval(c[f"gap_closed_bridge_vs_{floor}"], 0, 100)),
        macro(f"SpeedRatio{G}", fmt(c["speed_ratio"], 0)),
        macro(f"Ceiling{G}", escape(method_label(c["ceiling"], ev["w_label"]))),
        macro(f"BridgeOverFloor{G}", interval(c["bridge_vs_floor"]["psnr"], 2, unit="dB")),
    ]
    return "".join(out)


def bridge_paragraph(g: str, ev: dict) -> str:
    """The generated results text of one generator: floors, gap closed, speed, the equal-step
    comparison, all on one stated face set."""
    c, sub, w = ev["comparison"], ev["subset"], ev["w_label"]
    floor, ceiling = c["floor"], c["ceiling"]
    b, r = sub["bridge"], sub["bridge_refine"]
    gap = {m: c[f"gap_closed_{m}_vs_{floor}"] for m in ("bridge", "bridge_refine")}
    other = [f for f in c["floor_psnr"] if f != floor][0]
    d_ref = c["refine_vs_opt_short"]["psnr"]
    d_floor = c["bridge_vs_floor"]["psnr"]
    return (
        f"On \\texttt{{{escape(g)}}}, on {faces_phrase(ev)} (every number in this paragraph; "
        f"intervals are 95\\% bootstrap intervals over these faces), the bridge reaches "
        f"{fmt(b['psnr'], 2)}~$\\pm$~{fmt(b['psnr_std'], 2)}~dB PSNR (mean $\\pm$ std over {b['n_seeds']} seeds). "
        f"The floors carry no information about the input: the mean latent reaches "
        f"{fmt(c['floor_psnr']['mean_latent'], 2)}~dB and the mean training image "
        f"{fmt(c['floor_psnr']['mean_image'], 2)}~dB, so the stronger floor is the "
        f"{escape(method_label(floor, w))}. Per face, the bridge minus that floor: "
        f"{interval(d_floor, 2, unit='dB')}, "
        f"{verdict(d_floor, 'better than the floor', 'worse than the floor')}. "
        f"Between that floor and the ceiling, {escape(method_label(ceiling, w))} "
        f"({fmt(sub[ceiling]['psnr'], 2)}~dB, {ev['n_opt']} faces), the bridge closes "
        f"{interval(gap['bridge'], 0, 100)}\\% of the PSNR gap (against the "
        f"{escape(method_label(other, w))}: {fmt(c[f'gap_closed_bridge_vs_{other}']['mean'], 0, 100)}\\%), "
        f"at {fmt(c['speed_ratio'], 0)}$\\times$ the ceiling's speed (wall time on {escape(ev['device'])}); "
        f"bridge + refine ({r['n_seeds']} seeds, {fmt(r['psnr'], 2)}~dB) closes "
        f"{interval(gap['bridge_refine'], 0, 100)}\\%. "
        f"Matched at equal steps, optimization from the mean latent with the same schedule "
        f"({escape(method_label('opt_short', w))}) reaches {fmt(sub['opt_short']['psnr'], 2)}~dB; "
        f"bridge + refine minus it, per face: {interval(d_ref, 2, unit='dB')}, "
        f"{verdict(d_ref, 'so the bridge start helps', 'so the bridge start hurts')}.\n"
    )


def abstract_result(g: str, ev: dict) -> str:
    """The abstract's result sentence for the headline generator, on its optimization faces."""
    c, b = ev["comparison"], ev["subset"]["bridge"]
    floor = c["floor"]
    return (f"reaches {fmt(b['psnr'], 2)}~$\\pm$~{fmt(b['psnr_std'], 2)}~dB PSNR on {faces_phrase(ev)} "
            f"({b['n_seeds']} training seeds); there its per-face PSNR minus that of the stronger of two "
            f"no-information floors (the {escape(method_label(floor, ev['w_label']))}) is "
            f"{interval(c['bridge_vs_floor']['psnr'], 2, unit='dB')} (95\\% interval over faces), and it closes "
            f"{interval(c[f'gap_closed_bridge_vs_{floor}'], 0, 100)}\\% of the gap between that floor and "
            f"per-image optimization, at {fmt(c['speed_ratio'], 0)}$\\times$ its speed")


def findings(p: config.Params, evs: dict[str, dict], ablation_rows: list[dict], distill: dict) -> str:
    """The introduction's answers to the report's two questions, from the numbers: how well the
    bridge does against its floor and ceiling, what the ablations changed beyond their intervals,
    and how many of the report's layer-group claims hold on the style-based generator."""
    g = p.headline
    ev, c = evs[g], evs[g]["comparison"]
    floor = c["floor"]
    cells = [r for r in ablation_rows if r.get("delta_psnr") not in (None, "")]
    better = [r for r in cells if float(r["delta_lo"]) > 0]
    worse = [r for r in cells if float(r["delta_hi"]) < 0]
    best = max(cells, key=lambda r: float(r["delta_psnr"])) if cells else None
    parts = [f"(1) On \\texttt{{{escape(g)}}} ({faces_phrase(ev)}), the report's bridge minus the stronger "
             f"no-information floor (the {escape(method_label(floor, ev['w_label']))}) is "
             f"{interval(c['bridge_vs_floor']['psnr'], 2, unit='dB')} PSNR per face, and the bridge closes "
             f"{interval(c[f'gap_closed_bridge_vs_{floor}'], 0, 100)}\\% of the gap to per-image optimization."]
    if cells:
        parts.append(f"Of the {len(cells)} ablation cells, {len(better)} beat their reference row beyond their "
                     f"{stats.CI_PERCENT}\\% interval and {len(worse)} fall below it; the largest change is "
                     f"{escape(best['cell'])} on \\texttt{{{escape(best['generator'])}}} "
                     f"({fmt(float(best['delta_psnr']), 2)}~dB).")
    held = []
    for gen in p.generators:
        edits = read_json(paths.RESULTS / "edits" / gen / "metrics.json")["verdicts"]
        supported = sum(v["verdict"] == "supported" for v in edits.values())
        note = f" (a student {fmt(distill['psnr'], 2)}~dB from its teacher)" if gen == sections.STUDENT else ""
        held.append(f"{supported} of {len(edits)} on \\texttt{{{escape(gen)}}}{note}")
    parts.append("(2) The report's layer-group claims, judged per face and under both normalizations, "
                 "are supported for " + " and ".join(held) + ".")
    return " ".join(parts)


ATTRIBUTE_TEXT = {  # key -> (what, unit, digits, higher is better)
    "gender_agree": ("gender agreement", "", 2, True),
    "age_error": ("$|\\Delta$age$|$", "~years", 1, False),
    "identity": ("identity cosine", "", 2, True),
}


def attribute_paragraph(g: str, ev: dict) -> str:
    """Attribute columns against their instruments' noise: test-retest (mirrored, shifted by one
    pixel), chance (random pairs, majority gender), and the paired bridge-vs-floor difference."""
    inst = ev.get("instrument")
    if not inst:
        return ""
    sub, c = ev["subset"], ev["comparison"]
    found = sub["bridge"].get("face_found")
    parts = [f"On \\texttt{{{escape(g)}}} ({faces_phrase(ev)}), dlib finds a face in "
             f"{fmt(found, 2)} of the bridge's outputs whose input has one."]
    for key, (what, unit, d, higher) in ATTRIBUTE_TEXT.items():
        cells = ", ".join(f"{escape(method_label(m, ev['w_label']))} {fmt(sub[m].get(key), d)}"
                          for m in ("bridge", "bridge_refine", c["ceiling"]) if m in sub)
        noise = (f"the instrument scores {fmt(inst['mirror'].get(key), d)} on the same face mirrored and "
                 f"{fmt(inst['shift'].get(key), d)} shifted by one pixel, and "
                 f"{fmt(inst['random_pairs'].get(key), d)} for pairs of different faces")
        if key == "gender_agree":
            noise += f"; always answering the commonest gender scores {fmt(inst['majority_gender'], 2)}"
        chance = (ev.get("against_chance") or {}).get(key, {}).get("bridge")
        judged = "" if chance is None else (
            f" The bridge minus chance, per face: {interval(chance, d)}, "
            f"{verdict(chance, 'better than chance', 'worse than chance', higher)}.")
        parts.append(f"{what[0].upper() + what[1:]}{unit and f' ({unit.strip(chr(126))})'}: {cells}; {noise}.{judged}")
    return " ".join(parts) + "\n"


CLIP_ROWS = (  # (metrics key, macro stem, table label, digits)
    ("i2t_r1", "ImageToTextRecallOne", "image$\\to$text recall@1", 3),
    ("i2t_r5", "ImageToTextRecallFive", "image$\\to$text recall@5", 3),
    ("t2i_r1", "TextToImageRecallOne", "text$\\to$image recall@1", 3),
    ("t2i_r5", "TextToImageRecallFive", "text$\\to$image recall@5", 3),
    ("train_i2t_r1", "SeenImageToTextRecallOne", "image$\\to$text recall@1, as many training faces", 3),
    ("zs_mean_train", "ZeroShotTrain", "zero-shot accuracy, training prompts (mean over attributes)", 3),
    ("zs_mean_paraphrase", "ZeroShotParaphrase", "zero-shot accuracy, held-out paraphrases", 3),
    ("zs_mean_train_balanced", "ZeroShotTrainBalanced", "balanced zero-shot accuracy, training prompts", 3),
    ("zs_mean_paraphrase_balanced", "ZeroShotParaphraseBalanced", "balanced zero-shot accuracy, held-out paraphrases", 3),
    ("probe_r2_z", "ProbeZ", "ridge probe $R^2$, embedding $\\to$ z", 3),
    ("mean_pairwise_cosine", "PairwiseCosine", "mean pairwise cosine of test embeddings", 3),
)


def clip_tex(clip: dict, captions: dict) -> tuple[str, str]:
    """Macros and the trained-vs-random-init table of the offline CLIP."""
    t, r = clip["trained"], clip["random_init"]
    macros = [macro("ClipSteps", str(clip["steps"])), macro("ClipBatch", str(clip["batch"])),
              macro("ClipSlipWeight", f"{clip['slip_weight']:g}"),
              macro("ClipTrainFaces", str(captions["train"]["n_faces"])),
              macro("ClipTestFaces", str(captions["test"]["n_faces"]))]
    for key, stem, _, digits in CLIP_ROWS:
        macros.append(macro(f"Clip{stem}Trained", fmt(t[key], digits)))
        macros.append(macro(f"Clip{stem}Random", fmt(r[key], digits)))
    rows = ["% Generated by `dvc repro numbers`. Do not edit.\n",
            "\\begin{tabular}{lrr}\n\\toprule\n",
            "Measure & trained & random init \\\\\n\\midrule\n"]
    rows += [f"{label} & {fmt(t[key], d)} & {fmt(r[key], d)} \\\\\n" for key, _, label, d in CLIP_ROWS]
    rows.append("\\bottomrule\n\\end{tabular}\n")
    return "".join(macros), "".join(rows)


PRECISION_LABELS = {"fp32": "float32", "bf16": "bfloat16 autocast"}


def clip_run_tex(clip: dict, retrieval: list[dict]) -> str:
    """Macros for the paper's CLIP text: how and on what it was trained, which held-out prompts
    retrieve their value above its base rate (the retrieval figure's rows), and the attribute the
    model reads least far above chance (balanced accuracy with held-out paraphrases)."""
    seconds = clip.get("train_seconds")
    rest = [r for r in retrieval if r["precision"] <= r["base_rate"]]
    summary = (f"precision among the {int(retrieval[0]['k'])} nearest faces is above the base rate "
               f"for {len(retrieval) - len(rest)} of the {len(retrieval)} prompts")
    if rest:
        summary += "; not for " + ", ".join(
            f"``{escape(r['prompt'])}'' ({r['precision']:.2f} against {r['base_rate']:.2f})" for r in rest)
    t = clip["trained"]

    def above_chance(attr: str) -> float:          # 0 = chance (1 / values), 1 = perfect
        chance = 1 / t[f"zs_{attr}_classes"]
        return (t[f"zs_{attr}_paraphrase_balanced"] - chance) / (1 - chance)

    measured = [a for a in ATTRIBUTES if f"zs_{a}_paraphrase_balanced" in t]
    weakest = min(measured, key=above_chance)
    return "".join([
        macro("ClipPrecision", PRECISION_LABELS.get(clip.get("precision", "fp32"), "not recorded")),
        macro("ClipTrainDevice", escape(clip.get("train_device", "a device not recorded"))),
        macro("ClipTrainHours", fmt(seconds / 3600 if seconds is not None else None, 1)),
        macro("ClipRetrievalSummary", summary),
        macro("ClipWeakestAttribute", escape(weakest.replace("_", " "))),
        macro("ClipWeakestBalanced", fmt(t[f"zs_{weakest}_paraphrase_balanced"], 3)),
        macro("ClipWeakestChance", fmt(1 / t[f"zs_{weakest}_classes"], 3)),
    ])


def clip_attribute_table(clip: dict) -> str:
    """Balanced zero-shot accuracy per attribute, trained vs random init, both prompt wordings."""
    t, r = clip["trained"], clip["random_init"]
    rows = ["% Generated by `dvc repro numbers`. Do not edit.\n",
            "\\begin{tabular}{lrrrrrr}\n\\toprule\n",
            " & & & \\multicolumn{2}{c}{training prompts} & \\multicolumn{2}{c}{held-out paraphrases} \\\\\n",
            "Attribute & faces & values & trained & random & trained & random \\\\\n\\midrule\n"]
    for attr in ATTRIBUTES:
        if f"zs_{attr}_train_balanced" not in t:
            continue
        cells = [fmt(m[f"zs_{attr}_{kind}_balanced"], 3) for kind in ("train", "paraphrase") for m in (t, r)]
        rows.append(f"{escape(attr.replace('_', ' '))} & {t[f'zs_{attr}_n']:.0f} & "
                    f"{t[f'zs_{attr}_classes']:.0f} & " + " & ".join(cells) + " \\\\\n")
    rows.append("\\bottomrule\n\\end{tabular}\n")
    return "".join(rows)


def distill_tex(d: dict) -> str:
    """Macros describing the distilled student's fidelity to its teacher (results/distill/metrics.json)."""
    h = d["hierarchy"]
    yes_no = {True: "yes", False: "no", None: "undecided (no face pair found)"}
    return "".join([
        macro("StudentSteps", str(d["step"])),
        macro("StudentBatch", str(d["config"]["batch"])),
        macro("StudentTrainMinutes", fmt(d["train_seconds"] / 60, 0)),
        macro("StudentTrainDevice", escape(d["train_device"])),
        macro("StudentPsnr", fmt(d["psnr"], 2)),
        macro("StudentLpips", fmt(d["lpips_rand"], 3)),
        macro("StudentSsim", fmt(d["ssim"], 3)),
        macro("StudentFaceRate", fmt(d["face_rate_student"], 0, 100)),
        macro("TeacherFaceRate", fmt(d["face_rate_teacher"], 0, 100)),
        macro("StudentEvalN", str(d["n"])),
        macro("StudentCheckpointMb", fmt(d["checkpoint_mb"], 1)),
        macro("StudentCoarseGeometry", fmt(h["coarse"]["geometry"], 3)),
        macro("StudentFineGeometry", fmt(h["fine"]["geometry"], 3)),
        macro("StudentCoarseMovesMore", yes_no[h["coarse_moves_landmarks_more"]]),
        macro("StudentFineMoreColour", yes_no[h["fine_is_more_colour"]]),
        *(macro(f"Student{g.title()}ColourRatio", fmt(h[g]["colour"] / h[g]["geometry"], 2)
                if h[g]["geometry"] else "not measured (no face pair)") for g in ("coarse", "fine")),
    ])


TABLE_COLS = (("psnr", "PSNR (dB) $\\uparrow$", 2), ("ssim", "SSIM $\\uparrow$", 3), ("lpips", None, 3),
              ("identity", "ID cos $\\uparrow$", 2), ("age_error", "$|\\Delta$age$|$ $\\downarrow$", 1),
              ("gender_agree", "gender $\\uparrow$", 2), ("ms_per_image", "ms/img", 1))
TABLE_METHODS = ("mean_latent", "mean_image", "bridge", "bridge_refine", "opt_short", "opt_w", "opt_wplus")


def main_table_tex(evs: dict[str, dict], lpips_label: str) -> str:
    """Every generator x method, all on one face set per generator (the optimization faces):
    multi-seed rows (bridge, bridge + refine) mean $\\pm$ std over seeds, others $\\pm$ s.e.m."""
    head = " & ".join(t or f"{escape(lpips_label)} $\\downarrow$" for _, t, _ in TABLE_COLS)
    lines = ["% Generated by `dvc repro numbers`. Do not edit.\n",
             f"\\begin{{tabular}}{{ll{'r' * len(TABLE_COLS)}}}\n\\toprule\n",
             f"Generator (faces) & Method & {head} \\\\\n\\midrule\n"]
    for g, ev in evs.items():
        for i, method in enumerate(m for m in TABLE_METHODS if m in ev["subset"]):
            v = ev["subset"][method]
            spread = "_std" if "n_seeds" in v else "_sem"
            cells = []
            for key, _, d in TABLE_COLS:
                if key not in v:
                    cells.append("--")
                elif key in ("psnr", "lpips", "identity", "age_error", "gender_agree") and f"{key}{spread}" in v:
                    cells.append(f"{fmt(v[key], d)} $\\pm$ {fmt(v[key + spread], d)}")
                else:
                    cells.append(fmt(v[key], d))
            first = f"{escape(g)} ({ev['n_opt']})" if i == 0 else ""
            lines.append(f"{first} & {escape(method_label(method, ev['w_label']))} & {' & '.join(cells)} \\\\\n")
        lines.append("\\midrule\n" if g != list(evs)[-1] else "")
    lines.append("\\bottomrule\n\\end{tabular}\n")
    return "".join(lines)


def key_outputs() -> list[tuple[str, str]]:
    """(description, path) of the committed model checkpoints the appendix fingerprints with their
    ``dvc.lock`` MD5: files a rerun reuses, so their hash must match exactly. Result files embed
    wall times and are checked within tolerances by ``make verify`` instead."""
    return [("student generator (sg2-64)", "checkpoints/sg2-64.pt"),
            ("offline CLIP", "checkpoints/clip-offline.pt")]


def repro_table_tex(times: list[tuple[str, float]]) -> str:
    """The appendix table: each committed checkpoint's ``dvc.lock`` MD5 (first 12 digits, computed
    from the file as DVC does), then the measured wall time of each training run."""
    lines = ["% Generated by `dvc repro numbers`. Do not edit.\n",
             "\\begin{tabular}{llr}\n\\toprule\n",
             "Checkpoint & file & MD5 (\\texttt{dvc.lock}) \\\\\n\\midrule\n"]
    for label, path in key_outputs():
        lines.append(f"{escape(label)} & \\texttt{{{escape(path)}}} & \\texttt{{{md5_of(path)[:12]}}} \\\\\n")
    lines.append("\\midrule\nRun & & wall time (s) \\\\\n\\midrule\n")
    lines += [f"{escape(label)} & & {fmt(seconds, 0)} \\\\\n" for label, seconds in times]
    lines.append("\\bottomrule\n\\end{tabular}\n")
    return "".join(lines)


def run_times(p: config.Params) -> list[tuple[str, float]]:
    """Wall times the stages recorded: training runs (all chunks) and the layer-group studies."""
    from clipbridge.stages.train import curve_file

    times = [("offline CLIP training (clip)", read_csv(paths.RESULTS / "clip" / "curve.csv")[-1]["seconds"]),
             ("student distillation, all chunks (distill)", read_json(paths.RESULTS / "distill" / "metrics.json")["train_seconds"])]
    for g in p.generators:
        per_seed = [read_csv(curve_file(g, s))[-1]["seconds"] for s in p.train.seeds]
        times.append((f"headline bridge, {g}, mean per seed (train)", sum(per_seed) / len(per_seed)))
    for g in p.generators:
        times.append((f"layer-group study, {g} (edits)", read_json(paths.RESULTS / "edits" / g / "metrics.json")["settings"]["seconds"]))
    return times


def headline(p: config.Params, evs: dict[str, dict], clip: dict, distill: dict) -> dict:
    """The handful of numbers per stage and generator that ``dvc metrics show`` / ``diff`` print
    (results/headline.json): the detailed JSON files stay plain outputs."""
    out: dict = {"clip": {k: clip["trained"][k] for k in ("i2t_r1", "t2i_r1", "zs_mean_paraphrase_balanced",
                                                          "probe_r2_z")},
                 "distill": {"psnr": distill["psnr"], "face_rate": distill["face_rate_student"]}}
    for g, ev in evs.items():
        c = ev["comparison"]
        out[f"evaluate_{g}"] = {
            **{f"psnr_{m}": v["psnr"] for m, v in ev["subset"].items()},
            "gap_closed_bridge": c[f"gap_closed_bridge_vs_{c['floor']}"]["mean"],
            "bridge_over_floor_db": c["bridge_vs_floor"]["psnr"]["mean"],
            "refine_over_opt_short_db": c["refine_vs_opt_short"]["psnr"]["mean"],
            "speed_ratio": c["speed_ratio"],
        }
        edits = read_json(paths.RESULTS / "edits" / g / "metrics.json")
        out[f"edits_{g}"] = {claim: v["verdict"] for claim, v in edits["verdicts"].items()}
    out["ablations_psnr"] = {r["cell"]: r["psnr"] for r in read_csv(paths.RESULTS / "ablations" / "table.csv")}
    out["encoders"] = read_json(paths.STUDY / "metrics.json")
    return finite(out)


def opt_cost_text(evs: dict[str, dict]) -> str:
    """What the ceiling's optimization would cost on every test face instead of the first
    ``n_opt``: its measured time per face times the faces, per generator."""
    def minutes(ev: dict, n: int) -> str:
        return fmt(ev["methods"][ev["comparison"]["ceiling"]]["ms_per_image"] * n / 60000.0, 0)
    return sections.listing([f"about {minutes(ev, ev['n_test'])}~min for all {ev['n_test']} test faces of "
                             f"{sections.tt(g)} (against {minutes(ev, ev['n_opt'])}~min for its {ev['n_opt']}; "
                             f"{escape(method_label(ev['comparison']['ceiling'], ev['w_label']))} on {escape(ev['device'])})"
                             for g, ev in evs.items()])


def main(p: config.Params) -> None:
    from clipbridge.stages.evaluate import out_dir
    from clipbridge.stages.models import load_provenance
    from clipbridge.stages.train import curve_file

    prov = load_provenance(p)
    evs = {g: read_json(out_dir(g) / "metrics.json") for g in p.generators}
    ablation_rows = read_csv(paths.RESULTS / "ablations" / "table.csv")
    distill = read_json(paths.RESULTS / "distill" / "metrics.json")
    parts = ["".join(f"\\input{{generated/edits_{g}.tex}}\n" for g in p.generators),
             sections.switches(p, ablation_rows), profile_tex(p, prov),
             sections.generator_text(p, prov, {g: ev["n_opt"] for g, ev in evs.items()}, ablation_rows),
             sections.edits_text(p.generators, fmt(distill["psnr"], 2))]
    for g in p.generators:
        parts.append(generator_tex(g, evs[g], read_csv(curve_file(g, p.train.seeds[0]))[-1]))
        parts.append(photos_tex(g, read_json(paths.RESULTS / "photos" / g / "metrics.json")))
    parts.append(macro("PhotoResultsText", "\n".join(
        photos_paragraph(g, read_json(paths.RESULTS / "photos" / g / "metrics.json")) for g in p.generators)))
    parts.append(macro("AbstractResult", abstract_result(p.headline, evs[p.headline])))
    parts.append(macro("FindingsText", findings(p, evs, ablation_rows, distill)))
    parts.append(macro("OptAllFacesText", opt_cost_text(evs)))
    parts.append(macro("BridgeResultsText", "\n".join(bridge_paragraph(g, evs[g]) for g in p.generators)))
    parts.append(macro("AttributeResultsText", "\n".join(attribute_paragraph(g, evs[g]) for g in p.generators)))
    clip = read_json(paths.RESULTS / "clip" / "metrics.json")
    clip_macros, clip_table = clip_tex(clip, read_json(paths.RESULTS / "clip" / "captions.json"))
    parts += [clip_macros, clip_run_tex(clip, read_csv(paths.FIGURES / "bridge" / "clip_retrieval.csv")),
              distill_tex(distill)]
    write_text(paths.GENERATED / "numbers.tex", "% Generated by `dvc repro numbers` (src/clipbridge/stages/numbers.py)."
               " Do not edit.\n" + "".join(parts))
    write_text(paths.GENERATED / "main_table.tex", main_table_tex(evs, evs[p.headline]["lpips_variant"]))
    write_text(paths.GENERATED / "clip_table.tex", clip_table)
    write_text(paths.GENERATED / "clip_attributes.tex", clip_attribute_table(clip))
    write_text(paths.GENERATED / "repro_table.tex", repro_table_tex(run_times(p)))
    write_text(paths.GENERATED / "bridge_figures.tex", sections.bridge_figures(p.generators))
    write_text(paths.GENERATED / "photo_figure.tex", sections.photo_figure(p.generators))
    write_text(paths.GENERATED / "edits_floats.tex", sections.edits_floats(p.generators))
    write_json(paths.RESULTS / "headline.json", headline(p, evs, clip, distill))


if __name__ == "__main__":
    run(main)
