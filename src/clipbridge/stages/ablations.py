"""Stage ``ablations``: the ablation cells aggregated into tables.

A cell named ``<axis>-<value>`` belongs to the table of ``<axis>`` (depth, width, loss, target,
groups); a cell that changes nothing (the headline recipe, the report's bridge) is the
reference row of every table of its generator, except the groups table, whose reference is the
W+ bridge predicting every group. The value shown is read from the cell's
effective training config, so a table cannot disagree with what was trained.

A seed *stalled* when its validation RGB loss at the last step is not below its first logged
value (its curve, ``data/ablate/<cell>-<seed>/curve.csv``): training did not improve it (README,
"Bridge initialization"). Stalled seeds are reported apart (their PSNR in the stalled column) and
left out of the cell's mean +- std over seeds, so one collapsed seed is neither averaged into the
cell nor hidden.

Each cell's difference from its table's reference row is *paired*: per test face, the PSNR
averaged over the cell's non-stalled seeds minus the same for the reference, with a 95% bootstrap
interval over the faces (``ablate.bootstrap`` resamples, seed ``ablate.bootstrap_seed``). The
interval is over faces; seed-to-seed spread is the std column.

Outputs (committed): ``results/ablations/table.csv`` (one row per cell) and
``paper/generated/ablation_tables.tex`` (one booktabs table per axis).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from clipbridge import config, paths, stats
from clipbridge.io import read_csv, write_csv, write_text
from clipbridge.metrics import mean_std
from clipbridge.report.latex import escape, fmt
from clipbridge.stages import run
from clipbridge.stages.ablate import result_file

AXES = {  # axis -> (column title, how to show the config value)
    "depth": ("depth", lambda c: str(c["depth"])),
    "width": ("width", lambda c: str(c["width"])),
    "loss": ("loss", lambda c: " + ".join(n for n, k in (("RGB", "loss_rgb"), ("LPIPS", "loss_lpips"),
                                                         ("latent", "loss_latent")) if c[k] > 0)),
    "target": ("target", lambda c: c["target"].replace("w+", "W+").replace("w", "W")),
    "groups": ("predicted groups", lambda c: ", ".join(c["predict_groups"]) if c["predict_groups"] else "all"),
}
SHOWN = (("psnr", "PSNR", 2), ("ssim", "SSIM", 3), ("lpips", "LPIPS", 3))


def stalled(curve: list[dict]) -> bool:
    """Whether a training curve's last validation RGB loss is not below its first."""
    return curve[-1]["val_rgb"] >= curve[0]["val_rgb"]


def cell_rows(p: config.Params) -> list[dict]:
    """One row per cell: mean and std over its non-stalled seeds of the per-seed means, the stalled
    seeds apart, the per-face PSNR averaged over the non-stalled seeds (``face_psnr``) and the
    cell's effective training config (what the ``ablate`` stage trained)."""
    rows = []
    for name, cell in p.ablate.cells.items():
        faces = [read_csv(result_file(name, s)) for s in p.ablate.seeds]      # per face, split order
        runs = [{key: float(np.mean([f[key] for f in seed])) for key, _, _ in SHOWN} for seed in faces]
        stall = [stalled(read_csv(paths.ablate_dir(name, s) / "curve.csv")) for s in p.ablate.seeds]
        kept = [i for i, s in enumerate(stall) if not s] or list(range(len(runs)))  # all stalled: keep all
        row = {"cell": name, "generator": cell.generator, "n_seeds": len(runs), "steps": p.ablate.steps,
               "n_stalled": sum(stall),
               "stalled_psnr": " ".join(f"{r['psnr']:.2f}" for r, s in zip(runs, stall) if s)}
        for key, _, _ in SHOWN:
            row[key], row[f"{key}_std"] = mean_std([runs[i][key] for i in kept])
        row["face_psnr"] = np.mean([[f["psnr"] for f in faces[i]] for i in kept], axis=0)
        row["config"] = dataclasses.asdict(cell.train_config(p.train, p.ablate.steps, p.ablate.seeds[0]))
        rows.append(row)
    return rows


def is_reference(p: config.Params, name: str) -> bool:
    cell = p.ablate.cells[name]
    return all(v is None for k, v in vars(cell).items() if k != "generator")


def axis_of(name: str) -> str:
    return name.split("-")[0]


def reference_of(p: config.Params, rows: list[dict], row: dict, axis: str) -> dict | None:
    """The reference row of ``row`` in the table of ``axis`` (same generator), None if ``row`` is it."""
    if axis == "groups":  # compared with the w+ bridge that predicts every group
        refs = [r for r in rows if axis_of(r["cell"]) == "target" and r["config"]["target"] == "w+"]
    else:
        refs = [r for r in rows if is_reference(p, r["cell"])]
    refs = [r for r in refs if r["generator"] == row["generator"]]
    return None if not refs or refs[0] is row else refs[0]


def add_differences(p: config.Params, rows: list[dict]) -> None:
    """``delta_psnr`` (and its 95% interval ``delta_lo``/``delta_hi``) of each cell against the
    reference row of its own table: paired over the test faces."""
    for i, row in enumerate(rows):
        ref = reference_of(p, rows, row, axis_of(row["cell"])) if not is_reference(p, row["cell"]) else None
        if ref is None:
            row.update(reference="", delta_psnr=None, delta_lo=None, delta_hi=None)
            continue
        ci = stats.paired_difference(row["face_psnr"], ref["face_psnr"], p.ablate.bootstrap,
                                     np.random.default_rng([p.ablate.bootstrap_seed, i]))
        row.update(reference=ref["cell"], delta_psnr=ci["mean"], delta_lo=ci["lo"], delta_hi=ci["hi"])


def axis_rows(p: config.Params, rows: list[dict], axis: str) -> list[dict]:
    mine = [r for r in rows if axis_of(r["cell"]) == axis]
    refs = []
    for r in mine:
        ref = reference_of(p, rows, r, axis)
        if ref is not None and ref not in refs:
            refs.append(ref)
    return sorted(refs + mine, key=lambda r: (r["generator"], r["cell"] not in [x["cell"] for x in refs]))


def _delta_tex(row: dict, ref: dict | None) -> str:
    """A cell's paired PSNR difference from the reference of the table it is shown in (a cell of
    the table's axis: its own reference; otherwise it is that reference)."""
    if ref is None:
        return "reference"
    return f"{fmt(row['delta_psnr'], 2)} [{fmt(row['delta_lo'], 2)}, {fmt(row['delta_hi'], 2)}]"


def table_tex(p: config.Params, rows: list[dict], axis: str) -> str:
    title, show = AXES[axis]
    label = escape(p.active.metric)
    lines = [f"% ablation: {axis}\n", "\\begin{tabular}{llcccc}\n\\toprule\n",
             f"generator & {title} & PSNR $\\uparrow$ & $\\Delta$PSNR [95\\% CI] & SSIM $\\uparrow$ & "
             f"{label} $\\downarrow$ \\\\\n\\midrule\n"]
    for r in axis_rows(p, rows, axis):
        ref = reference_of(p, rows, r, axis)
        mark = " (report)" if is_reference(p, r["cell"]) and axis != "groups" else ""
        mark += "$^\\dagger$" if r["n_stalled"] else ""
        mean_std_tex = {k: f"{fmt(r[k], d)} $\\pm$ {fmt(r[k + '_std'], d)}" for k, _, d in SHOWN}
        lines.append(f"{escape(r['generator'])} & {escape(show(r['config']))}{mark} & {mean_std_tex['psnr']} & "
                     f"{_delta_tex(r, ref)} & {mean_std_tex['ssim']} & {mean_std_tex['lpips']} \\\\\n")
    lines.append("\\bottomrule\n\\end{tabular}\n")
    return "".join(lines)


def axis_summary(p: config.Params, rows: list[dict], axis: str) -> str:
    """One sentence per axis for the paper: each cell's paired PSNR difference from its reference,
    read as better / worse only where the 95% interval excludes 0."""
    title, show = AXES[axis]
    said = []
    for r in (r for r in rows if axis_of(r["cell"]) == axis and r["delta_psnr"] is not None):
        ref = next(x for x in rows if x["cell"] == r["reference"])
        excludes = r["delta_lo"] > 0 or r["delta_hi"] < 0
        reading = ("better" if r["delta_psnr"] > 0 else "worse") if excludes else "not distinguishable"
        said.append(f"{escape(show(r['config']))} on \\texttt{{{escape(r['generator'])}}} against "
                    f"{escape(show(ref['config']))}: {fmt(r['delta_psnr'], 2)}~dB "
                    f"[{fmt(r['delta_lo'], 2)}, {fmt(r['delta_hi'], 2)}], {reading}")
    return f"{title[0].upper() + title[1:]}: " + "; ".join(said) + "." if said else ""


def stalled_note(rows: list[dict]) -> str:
    """One sentence for the paper: which cells had stalled seeds (or that none did)."""
    hit = [r for r in rows if r["n_stalled"]]
    if not hit:
        return "No seed stalled."
    cells = "; ".join(f"\\texttt{{{escape(r['cell'])}}} on \\texttt{{{escape(r['generator'])}}}, "
                      f"{r['n_stalled']} of {r['n_seeds']} seeds (PSNR {r['stalled_psnr']} dB)"
                      for r in hit)
    return (f"$^\\dagger$Stalled: {cells}; the cell's mean $\\pm$ std and its $\\Delta$PSNR are over the "
            f"other seeds.")


def main(p: config.Params) -> None:
    rows = cell_rows(p)
    add_differences(p, rows)
    write_csv(paths.RESULTS / "ablations" / "table.csv",
              [{k: v for k, v in r.items() if k not in ("config", "face_psnr")} for r in rows])
    out = ["% Generated by `dvc repro ablations` (src/clipbridge/stages/ablations.py). Do not edit.\n"]
    for axis in AXES:  # every table is defined; an axis without cells says so
        has_cells = any(axis_of(r["cell"]) == axis for r in rows)
        body = table_tex(p, rows, axis) if has_cells else f"(no ablation cells on {axis} in params.yaml)\n"
        out.append(f"\\newcommand{{\\AblationTable{axis.capitalize()}}}{{%\n{body}}}\n")
    out.append(f"\\newcommand{{\\AblationStalledNote}}{{{stalled_note(rows)}}}\n")
    summary = " ".join(s for s in (axis_summary(p, rows, a) for a in AXES) if s)
    out.append(f"\\newcommand{{\\AblationSummary}}{{{summary}}}\n")
    write_text(paths.GENERATED / "ablation_tables.tex", "".join(out))

if __name__ == "__main__":
    run(main)
