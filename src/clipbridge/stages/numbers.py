"""Stage ``numbers``: every number the paper's text uses, as macros in paper/generated/numbers.tex,
the main results table (main_table.tex), the CLIP tables (clip_table.tex; clip_attributes.tex,
per attribute) and the appendix's reproducibility table (repro_table.tex: dvc.lock hashes of key
outputs, measured training times).
Nothing in the paper is typed by hand.
"""

from __future__ import annotations

import math

from clipbridge import config, paths
from clipbridge.captions import ATTRIBUTES
from clipbridge.figures import METHOD_LABELS
from clipbridge.io import md5_of, read_json, write_text
from clipbridge.latex import escape, fmt, macro, macro_name
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


def beats(bridge: dict, floor: dict, key: str, higher_is_better: bool) -> bool | None:
    """Bridge better than the floor by more than 3 seed standard deviations (None: metric missing)."""
    if key not in bridge or key not in floor:
        return None
    diff = bridge[key] - floor[key] if higher_is_better else floor[key] - bridge[key]
    return diff > 3 * bridge.get(f"{key}_std", 0.0)


HIGHER = {"psnr": True, "ssim": True, "lpips": False, "mse": False, "identity": True, "age_error": False,
          "gender_agree": True}


def photos_tex(g: str, ph: dict) -> str:
    """The real photos: mean PSNR per method, the report baseline's RGB loss before / after (first photo)."""
    G, first = gen_macro(g), ph["photos"][0]
    out = [macro(f"ReportRgbBefore{G}", fmt(ph["report_rgb_before"][first], 4)),
           macro(f"ReportRgbAfter{G}", fmt(ph["report_rgb_after"][first], 4)),
           macro(f"ReportPhoto{G}", escape(first))]
    for method, per_photo in ph["methods"].items():
        psnrs = [v["psnr"] for v in per_photo.values()]
        out.append(macro(macro_name("photo psnr", g, method), fmt(sum(psnrs) / len(psnrs), 2)))
    return "".join(out)


def generator_tex(g: str, ev: dict, curve_last: dict) -> str:
    """Macros of one generator's evaluation: every method's metrics, the comparison, the verdicts."""
    G = gen_macro(g)
    out = [macro(f"DeviceName{G}", escape(ev["device"])),
           macro(f"TrainSeconds{G}", fmt(curve_last["seconds"], 0)),
           macro(f"FinalValMse{G}", fmt(curve_last["val_rgb"], 4))]
    for method, vals in ev["methods"].items():
        for key, digits in DIGITS.items():  # n/a where no face was found to measure
            out.append(macro(macro_name(key, g, method), fmt(vals.get(key), digits)))
            if f"{key}_std" in vals:
                out.append(macro(macro_name(key, "std", g, method), fmt(vals[f"{key}_std"], digits)))
    for method, vals in ev["subset"].items():
        out.append(macro(macro_name("psnr", "subset", g, method), fmt(vals["psnr"], 2)))
    c = ev["comparison"]
    b, m = ev["methods"]["bridge"], ev["methods"]["mean_latent"]
    out += [
        macro(f"PsnrGain{G}", fmt(b["psnr"] - m["psnr"], 2)),
        macro(f"GapClosed{G}", fmt(c["gap_closed_bridge"], 0, 100)),
        macro(f"GapClosedRefine{G}", fmt(c["gap_closed_bridge_refine"], 0, 100)),
        macro(f"SpeedRatio{G}", fmt(c["speed_ratio"], 0)),
        macro(f"Ceiling{G}", escape(METHOD_LABELS.get(c["ceiling"], c["ceiling"]))),
        macro(f"OptPsnrAtRefineTime{G}", fmt(c["opt_psnr_at_refine_time"], 2)),
        macro(f"RefineBeatsOpt{G}", YES_NO[c["refine_beats_equal_time_opt"]]),
    ]
    image_keys = ("psnr", "ssim", "lpips")
    verdicts = {k: beats(b, m, k, HIGHER[k]) for k in image_keys}
    out.append(macro(f"BridgeBeatsMeanImage{G}", YES_NO[all(verdicts.values())]))
    for k in ("age_error", "gender_agree", "identity"):
        verdict = beats(b, m, k, HIGHER[k])
        out.append(macro(macro_name("bridge beats mean", k, g), YES_NO[verdict] if verdict is not None else
                         "not measurable, since dlib finds no face in the mean-latent images"))
    return "".join(out)


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
TABLE_METHODS = ("mean_latent", "bridge", "bridge_refine", "opt_w", "opt_wplus")


def main_table_tex(evs: dict[str, dict], lpips_label: str) -> str:
    """Every generator x method; bridge rows: mean $\\pm$ std over seeds, others $\\pm$ s.e.m.;
    methods marked $^\\dagger$ ran on the first n_opt faces only."""
    head = " & ".join(t or f"{escape(lpips_label)} $\\downarrow$" for _, t, _ in TABLE_COLS)
    lines = ["% Generated by `dvc repro numbers`. Do not edit.\n",
             f"\\begin{{tabular}}{{ll{'r' * len(TABLE_COLS)}}}\n\\toprule\n",
             f"Generator & Method & {head} \\\\\n\\midrule\n"]
    for g, ev in evs.items():
        for method in TABLE_METHODS:
            if method not in ev["methods"]:
                continue
            v = ev["methods"][method]
            spread = "_std" if method == "bridge" else "_sem"
            cells = []
            for key, _, d in TABLE_COLS:
                if key not in v:
                    cells.append("--")
                elif key in ("psnr", "lpips") and f"{key}{spread}" in v:
                    cells.append(f"{fmt(v[key], d)} $\\pm$ {fmt(v[key + spread], d)}")
                else:
                    cells.append(fmt(v[key], d))
            dagger = "$^\\dagger$" if method in ev["subset"] and method not in ("mean_latent", "bridge") else ""
            lines.append(f"{escape(g)} & {escape(METHOD_LABELS.get(method, method))}{dagger} & {' & '.join(cells)} \\\\\n")
        lines.append("\\midrule\n" if g != list(evs)[-1] else "")
    lines.append("\\bottomrule\n\\end{tabular}\n")
    return "".join(lines)


def key_outputs(p: config.Params) -> list[tuple[str, str]]:
    """(description, path) of the outputs the paper's appendix fingerprints with their
    ``dvc.lock`` hash; every one is a dependency of this stage."""
    return ([("student generator (sg2-64)", "checkpoints/sg2-64.pt"),
             ("offline CLIP", "checkpoints/clip-offline.pt"),
             ("student fidelity", "results/distill/metrics.json"),
             ("offline CLIP measures", "results/clip/metrics.json")]
            + [(f"evaluation, {g}", f"results/evaluate/{g}/metrics.json") for g in p.generators]
            + [("ablation table", "results/ablations/table.csv")]
            + [(f"layer-group study, {g}", f"results/edits/{g}/metrics.json") for g in p.generators])


def repro_table_tex(p: config.Params, times: list[tuple[str, float]]) -> str:
    """The appendix table: each key output's ``dvc.lock`` MD5 (first 12 digits, computed from the
    file as DVC does), then the measured wall time of each training run."""
    lines = ["% Generated by `dvc repro numbers`. Do not edit.\n",
             "\\begin{tabular}{llr}\n\\toprule\n",
             "Output & file & MD5 (\\texttt{dvc.lock}) \\\\\n\\midrule\n"]
    for label, path in key_outputs(p):
        lines.append(f"{escape(label)} & \\texttt{{{escape(path)}}} & \\texttt{{{md5_of(path)[:12]}}} \\\\\n")
    lines.append("\\midrule\nRun & & wall time (s) \\\\\n\\midrule\n")
    lines += [f"{escape(label)} & & {fmt(seconds, 0)} \\\\\n" for label, seconds in times]
    lines.append("\\bottomrule\n\\end{tabular}\n")
    return "".join(lines)


def run_times(p: config.Params) -> list[tuple[str, float]]:
    """Wall times the stages recorded: training runs (all chunks) and the layer-group studies."""
    from clipbridge.figures import read_csv
    from clipbridge.stages.train import curve_file

    times = [("offline CLIP training (clip)", read_csv(paths.RESULTS / "clip" / "curve.csv")[-1]["seconds"]),
             ("student distillation, all chunks (distill)", read_json(paths.RESULTS / "distill" / "metrics.json")["train_seconds"])]
    for g in p.generators:
        per_seed = [read_csv(curve_file(g, s))[-1]["seconds"] for s in p.train.seeds]
        times.append((f"headline bridge, {g}, mean per seed (train)", sum(per_seed) / len(per_seed)))
    for g in p.generators:
        times.append((f"layer-group study, {g} (edits)", read_json(paths.RESULTS / "edits" / g / "metrics.json")["settings"]["seconds"]))
    return times


def main(p: config.Params) -> None:
    from clipbridge.figures import read_csv
    from clipbridge.stages.evaluate import out_dir
    from clipbridge.stages.models import load_provenance
    from clipbridge.stages.train import curve_file

    prov = load_provenance(p)
    evs = {g: read_json(out_dir(g) / "metrics.json") for g in p.generators}
    parts = [profile_tex(p, prov)]
    for g in p.generators:
        parts.append(generator_tex(g, evs[g], read_csv(curve_file(g, p.train.seeds[0]))[-1]))
        parts.append(photos_tex(g, read_json(paths.RESULTS / "photos" / g / "metrics.json")))
    clip = read_json(paths.RESULTS / "clip" / "metrics.json")
    clip_macros, clip_table = clip_tex(clip, read_json(paths.RESULTS / "clip" / "captions.json"))
    parts += [clip_macros, clip_run_tex(clip, read_csv(paths.FIGURES / "bridge" / "clip_retrieval.csv")),
              distill_tex(read_json(paths.RESULTS / "distill" / "metrics.json"))]
    write_text(paths.GENERATED / "numbers.tex", "% Generated by `dvc repro numbers` (src/clipbridge/stages/numbers.py)."
               " Do not edit.\n" + "".join(parts))
    write_text(paths.GENERATED / "main_table.tex", main_table_tex(evs, prov["lpips"]))
    write_text(paths.GENERATED / "clip_table.tex", clip_table)
    write_text(paths.GENERATED / "clip_attributes.tex", clip_attribute_table(clip))
    write_text(paths.GENERATED / "repro_table.tex", repro_table_tex(p, run_times(p)))


if __name__ == "__main__":
    run(main)
