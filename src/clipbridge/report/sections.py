"""The parts of the paper that depend on which generators and which profile ran.

``paper/main.tex`` holds the prose that is true of any run; what names a generator is written
here, from ``params.yaml`` and the registry, so that ``make paper`` builds for whatever
``generators`` and ``profile`` the pipeline ran (the report's own setup included):

- figure floats with one panel per generator (:func:`bridge_figures`, :func:`photo_figure`,
  :func:`edits_floats`), each naming the function that drew its panels;
- the layer-group study's judged claims, one paragraph per generator (:func:`edits_judged`);
- sentences that list generators (:func:`generator_text`), and the switches with which main.tex
  keeps the paragraphs that only some runs need (:func:`switches`): the offline CLIP's own
  section when it is the encoder, the distilled student where a result rests on it, the DCGAN's
  dead zone where a DCGAN runs.
"""

from __future__ import annotations

import re

from clipbridge import config, registry
from clipbridge.edits.verdicts import CLAIMS
from clipbridge.report.latex import escape, macro, macro_name

STUDENT = "sg2-64"                  # the generator distilled by the distill stage
TEACHER = "dcgan64"                 # the generator it is distilled from
ORDINALS = ("first", "second", "third")
URL = re.compile(r"\s*\(https?://[^)]*\)")  # a source's download address (kept in the registry), left out of the paper
CITES = {"dcgan": "radford2016dcgan,bae2023digiface", "stylegan2": "karras2020stylegan2"}  # by generator kind
AXIS_WORDS = {"target": "the target space", "groups": "the layer groups a W+ bridge predicts"}  # ablation axes in prose


def tt(name: str) -> str:
    return f"\\texttt{{{escape(name)}}}"


def listing(items: list[str]) -> str:
    """``[a]`` -> ``a``; ``[a, b]`` -> ``a and b``; ``[a, b, c]`` -> ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def panels_phrase(generators: list[str]) -> str:
    """Which panel is which: ``Left: a; right: b.``, or the generator of a single panel."""
    if len(generators) == 1:
        return f"Generator: {tt(generators[0])}."
    return "Panels, left to right: " + ", ".join(tt(g) for g in generators) + "."


def panel_row(files: list[str], size: str | None = None) -> str:
    """``files`` side by side, equal widths (one file: 70% of the line), or each at ``size``."""
    width = f"{0.98 / len(files):.2f}\\linewidth" if len(files) > 1 else "0.7\\linewidth"
    return "\\hfill\n".join(f"\\includegraphics[{size or 'width=' + width}]{{{f}}}" for f in files)


def figure(rows: list[tuple[str, str]], caption: str, label: str) -> str:
    """One float of ``rows`` (``(made by, panel row)``), a caption and a label."""
    body = "\n".join(f"% made by {made_by}\n{row}" for made_by, row in rows)
    return (f"\\begin{{figure}}[t]\n\\centering\n{body}\n"
            f"\\caption{{{caption}}}\n\\label{{{label}}}\n\\end{{figure}}\n\n")


def has_style_space(generator: str) -> bool:
    return registry.generator_entry(generator).num_ws > 1


def bridge_figures(generators: list[str]) -> str:
    """The speed/quality plane, the training curves and the reconstruction grids, a panel per generator."""
    which = panels_phrase(generators)
    n = len(generators)
    grid = f"width={0.98 / n:.2f}\\linewidth,height=0.45\\textheight,keepaspectratio" if n > 1 else "height=0.45\\textheight"
    return "".join([
        figure([("clipbridge.report.figures.speed_quality", panel_row([f"speed_quality_{g}.pdf" for g in generators]))],
               "PSNR against time per image on the faces optimization runs on: optimization from the mean latent "
               f"and bridge + refine as curves over their steps, the mean latent and the bridge as points. {which}",
               "fig:speed"),
        figure([("clipbridge.report.figures.loss_curve", panel_row([f"loss_curve_{g}.pdf" for g in generators]))],
               "Bridge training (first seed): pixel MSE on training batches and on the held-out validation faces. "
               + which, "fig:curve"),
        figure([("clipbridge.report.figures.reconstruction_grid",
                 panel_row([f"reconstructions_{g}.pdf" for g in generators], grid))],
               f"Held-out faces (top row) and their reconstructions by each method. {which}", "fig:recon"),
    ])


def photo_figure(generators: list[str]) -> str:
    return figure([("clipbridge.report.figures.image_grid (stage photos)",
                    panel_row([f"photos_{g}.pdf" for g in generators], "height=0.42\\textheight"))],
                  "Real photos (top row) through every method, including the report's one-photo experiment "
                  f"(bottom row). {panels_phrase(generators)}", "fig:photos")


def edits_prefix(generator: str) -> str:
    """The layer-group stage's macro prefix for ``generator`` (``Edits`` + its name in letters)."""
    return "Edits" + macro_name(generator)


def edits_order(generators: list[str]) -> list[str]:
    """Generators with a style space first: the report's questions are about W+."""
    return sorted(generators, key=lambda g: not has_style_space(g))


def edits_floats(generators: list[str]) -> str:
    """The report's strip, the group x measure heat maps and magnitude curves, the measures table
    of each generator with a style space, and every generator's verdict table."""
    generators = edits_order(generators)
    which = panels_phrase(generators)
    spaces = "; ".join(f"{tt(g)}: \\{edits_prefix(g)}Space" for g in generators)
    first = edits_prefix(generators[0])
    out = [figure([("clipbridge.report.figures.edits_strip", panel_row([f"edits_strip_{g}.pdf" for g in generators]))],
                  f"The report's experiment: one face, one random offset per group (rows), steps \\{first}StripShow{{}} "
                  f"(columns). {which} Edited: {spaces}.", "fig:strip"),
           figure([("clipbridge.report.figures.edits_heatmap", panel_row([f"edits_heatmap_{g}.pdf" for g in generators])),
                   ("clipbridge.report.figures.edits_magnitude",
                    panel_row([f"edits_magnitude_{g}.pdf" for g in generators]))],
                  f"Top: group $\\times$ measure at the largest magnitude; bottom: measures against offset magnitude. "
                  f"{which}", "fig:editsheat")]
    for g in generators:
        if has_style_space(g):
            e = edits_prefix(g)
            out.append(f"\\begin{{table}}[t]\n\\centering\n\\caption{{Layer groups of {tt(g)} at magnitude "
                       f"\\{e}VerdictMagnitude{{}}: mean [bootstrap CI] over faces, face measures on the common face "
                       "set (face--draw pairs whose face every group's edit keeps); the face-loss rate of each group "
                       "is the share of its edits in which dlib loses a face found in the unedited image.}\n"
                       f"\\label{{tab:edits-{g}}}\n\\resizebox{{\\linewidth}}{{!}}{{\\{e}Table}}\n\\end{{table}}\n\n")
    order = ", ".join(f"{tt(g)}" for g in generators)
    tables = "\\par\\medskip\n".join(f"\\resizebox{{\\linewidth}}{{!}}{{\\{edits_prefix(g)}VerdictTable}}"
                                     for g in generators)
    out.append("\\begin{table}[t]\n\\centering\n\\caption{The report's four claims against the measurements, "
               f"top to bottom: {order}. Per measure: the common face set (faces / face--draw pairs), the paired "
               "difference claimed group $-$ strongest rival with its \\CiLevel{} bootstrap interval and the verdict, "
               "per unit of RMS change and raw; a claim is supported only where both normalizations support it.}\n"
               f"\\label{{tab:verdicts}}\n{tables}\n\\end{{table}}\n\n")
    return "".join(out)


def edits_judged(generators: list[str], student_psnr: str) -> str:
    """Each generator's four claims, with the verdict under both normalizations, the evidence
    (difference to the strongest rival, interval and sample) and how often the group loses the face."""
    paragraphs = []
    for g in edits_order(generators):
        e = edits_prefix(g)
        caveat = f", a student {student_psnr}~dB from its teacher" if g == STUDENT else ""
        claims = []
        for claim in CLAIMS:
            c = f"\\{e}Verdict{macro_name(claim.key)}"
            ordinal = "last" if claim.position == -1 else ORDINALS[claim.position]
            lost = "" if claim.key == "background" else f"; the group loses the face in {c}FaceLoss{{}} of its edits"
            claims.append(f"the {ordinal} group ({c}Group) = {escape(claim.text)}: {c}{{}} (per RMS {c}PerRms, raw "
                          f"{c}Raw: the normalizations {c}Agree; {c}Evidence{lost})")
        paragraphs.append(f"On {tt(g)} (edited: \\{e}Space{caveat}; \\{e}NFaces{{}} faces, "
                          f"\\{e}NDraws{{}} draws; at magnitude \\{e}VerdictMagnitude): " + "; ".join(claims) + ".")
    return "\n\n".join(paragraphs)


def kind_phrase(generator: str) -> str:
    """What the generator is, in a few words: ``pretrained DCGAN``, ``distilled StyleGAN2``, ..."""
    e = registry.generator_entry(generator)
    if e.kind == "dcgan":
        return "pretrained DCGAN"
    return "distilled StyleGAN2" if e.stand_in else "pretrained StyleGAN2"


def generator_text(p: config.Params, prov: dict, n_opt: dict[str, int], ablation_rows: list[dict]) -> str:
    """Macros of the sentences that name generators: the setup, the face sets, the batches, the
    final validation MSE, the student's caveat, the ablations' generators and the weights' hashes."""
    gens = p.generators
    G = {g: macro_name(g) for g in gens}
    entries = {g: registry.generator_entry(g) for g in gens}
    described = "; ".join(
        f"{tt(g)}, {escape(URL.sub('', prov['generators'][g]['source']))}~\\cite{{{CITES[entries[g].kind]}}}: "
        f"{entries[g].resolution}~px, "
        + ("input z as in the report, no style space" if entries[g].num_ws == 1 else f"{entries[g].num_ws} W+ vectors")
        + (", a stand-in for StyleGAN2 FFHQ" if entries[g].stand_in else "") for g in gens)
    axes: dict[str, list[str]] = {}
    for row in ablation_rows:
        axis = row["cell"].split("-")[0]
        axes.setdefault(axis, [])
        if row["generator"] not in axes[axis]:
            axes[axis].append(row["generator"])
    by_gens: dict[tuple[str, ...], list[str]] = {}
    for axis, on in axes.items():
        if axis != "report":
            by_gens.setdefault(tuple(on), []).append(axis)
    said = [listing([AXIS_WORDS.get(a, a) for a in names]) + f" run on {listing([tt(g) for g in on])}"
            for on, names in by_gens.items()]
    ablations = "; ".join(said)
    ablations = ablations[:1].upper() + ablations[1:]
    teacher, student = registry.generator_entry(TEACHER), registry.generator_entry(STUDENT)
    return "".join([
        macro("HeadlineGeneratorKind", kind_phrase(p.headline)),
        macro("GeneratorsText", described),
        macro("OptFacesText", listing([f"the first {n_opt[g]} test faces of {tt(g)}" for g in gens])),
        macro("TrainBatchText", listing([f"{p.train.batch_for(g)} on {tt(g)}" for g in gens])),
        macro("FinalValMseText", listing([f"\\FinalValMse{G[g]}{{}} on {tt(g)}" for g in gens])),
        macro("DeviceNameHeadline", f"\\DeviceName{macro_name(p.headline)}"),
        macro("StudentCaveat", f" Rows on {tt(STUDENT)} rest on a student at \\StudentPsnr{{}}~dB from its teacher."
              if STUDENT in gens else ""),
        macro("WeightsShaText", listing([f"{tt(g)} \\texttt{{\\Sha{G[g]}}}" for g in gens]
                                        + ["the encoder \\texttt{\\ShaEncoder}"])),
        macro("AblationGeneratorsText", ablations + "." if ablations else ""),
        macro("ClipTrainGenerators", listing([tt(g) for g in p.clip_data.generators])),
        macro("TeacherResolution", str(teacher.resolution)),
        macro("StudentResolution", str(student.resolution)),
        macro("StudentNumWs", str(student.num_ws)),
    ])


def edits_text(generators: list[str], student_psnr: str) -> str:
    """Macros of the layer-group section: settings shared by every generator (taken from the first
    with a style space), which generators ran and in what space, and each one's judged claims."""
    generators = edits_order(generators)
    main = next((g for g in generators if has_style_space(g)), generators[0])
    e = edits_prefix(main)
    shared = ("StripSteps", "StripStep", "StripShow", "NFaces", "NDraws", "Magnitudes", "LowpassCycles",
              "Bootstrap", "VerdictMagnitude", "FaceLossMax", "FaceLossMaxGroup", "FaceLossFinest", "FinestGroup")
    ran = []
    for g in generators:
        entry = registry.generator_entry(g)
        ran.append(f"{tt(g)}, whose {entry.num_ws} style vectors are grouped by resolution (a block's toRGB "
                   "shares its vector with the next block's first convolution)" if entry.num_ws > 1 else
                   f"{tt(g)}, a generator without W+ whose per-channel scales after each BatchNorm act as styles")
    styled = [g for g in generators if has_style_space(g)]
    refs = (("Tables~" if len(styled) > 1 else "Table~") + ", ".join(f"\\ref{{tab:edits-{g}}}" for g in styled) + ", "
            if styled else "")
    return "".join([
        *(macro(f"Edits{name}", f"\\{e}{name}") for name in shared),
        macro("EditsMainGenerator", escape(main)),
        macro("EditsGeneratorsText", listing(ran)),
        macro("EditsUnitsText", "; ".join(f"\\{edits_prefix(g)}MagnitudeUnit{{}} on {tt(g)}" for g in generators)),
        macro("EditsTablesRef", refs),
        macro("EditsJudgedText", edits_judged(generators, student_psnr)),
    ])


def switches(p: config.Params, ablation_rows: list[dict]) -> str:
    """``\\newif`` switches for paragraphs that only some runs need, set from what ran."""
    used = set(p.generators) | {row["generator"] for row in ablation_rows}
    on = {
        "OfflineClip": p.active.encoder == "clip-offline",
        "Student": STUDENT in used,
        "DeadZone": any(registry.generator_entry(g).kind == "dcgan" for g in p.generators),
        "OfflineProfile": not p.active.downloads,
    }
    return "".join(f"\\newif\\if{name}\\{name}{'true' if value else 'false'}\n" for name, value in on.items())
