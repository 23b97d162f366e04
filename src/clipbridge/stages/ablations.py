"""Stage ``ablations``: the ablation cells aggregated into tables (mean +- std over seeds).

A cell named ``<axis>-<value>`` belongs to the table of ``<axis>`` (depth, width, loss, target,
groups); a cell that changes nothing (the headline recipe, the report's bridge) is the
reference row of every table of its generator, except the groups table, whose reference is the
W+ bridge predicting every group. The value shown is read from the cell's
effective training config, so a table cannot disagree with what was trained.

A seed *stalled* when its validation RGB loss at the last step is not below its first logged
value (its curve, ``data/ablate/<cell>-<seed>/curve.csv``): training did not improve it (README,
"Bridge initialization"). Stalled seeds stay in the mean +- std; the table marks their cell with a
dagger and ``\AblationStalledNote`` names them, so a wide spread is not read as noise.

Outputs (committed): ``results/ablations/table.csv`` (one row per cell) and
``paper/generated/ablation_tables.tex`` (one booktabs table per axis).
"""

from __future__ import annotations

from clipbridge import config, paths
from clipbridge.io import read_json, write_csv, write_text
from clipbridge.latex import escape, fmt
from clipbridge.metrics import mean_std
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
    """One row per cell: mean and std over seeds of each metric, with the cell's config."""
    from clipbridge.figures import read_csv

    rows = []
    for name, cell in p.ablate.cells.items():
        runs = [read_json(result_file(name, s)) for s in p.ablate.seeds]
        row = {"cell": name, "generator": cell.generator, "n_seeds": len(runs), "steps": p.ablate.steps,
               "n_stalled": sum(stalled(read_csv(paths.ablate_dir(name, s) / "curve.csv")) for s in p.ablate.seeds)}
        for key, _, _ in SHOWN:
            row[key], row[f"{key}_std"] = mean_std([r[key] for r in runs])
        row["config"] = runs[0]["config"]
        rows.append(row)
    return rows


def is_reference(p: config.Params, name: str) -> bool:
    cell = p.ablate.cells[name]
    return all(v is None for k, v in vars(cell).items() if k != "generator")


def axis_rows(p: config.Params, rows: list[dict], axis: str) -> list[dict]:
    mine = [r for r in rows if r["cell"].split("-")[0] == axis]
    gens = {r["generator"] for r in mine}
    if axis == "groups":  # compared with the w+ bridge that predicts every group
        refs = [r for r in rows if r["cell"].split("-")[0] == "target" and r["config"]["target"] == "w+"
                and r["generator"] in gens]
    else:
        refs = [r for r in rows if is_reference(p, r["cell"]) and r["generator"] in gens]
    return sorted(refs + mine, key=lambda r: (r["generator"], r["cell"] not in [x["cell"] for x in refs]))


def table_tex(p: config.Params, rows: list[dict], axis: str) -> str:
    title, show = AXES[axis]
    label = escape(p.active.lpips)
    lines = [f"% ablation: {axis}\n", "\\begin{tabular}{llccc}\n\\toprule\n",
             f"generator & {title} & PSNR $\\uparrow$ & SSIM $\\uparrow$ & {label} $\\downarrow$ \\\\\n\\midrule\n"]
    for r in axis_rows(p, rows, axis):
        ref = " (report)" if is_reference(p, r["cell"]) and axis != "groups" else ""
        ref += "$^\\dagger$" if r["n_stalled"] else ""
        cells = " & ".join(f"{fmt(r[k], d)} $\\pm$ {fmt(r[k + '_std'], d)}" for k, _, d in SHOWN)
        lines.append(f"{escape(r['generator'])} & {escape(show(r['config']))}{ref} & {cells} \\\\\n")
    lines.append("\\bottomrule\n\\end{tabular}\n")
    return "".join(lines)


def stalled_note(rows: list[dict]) -> str:
    """One sentence for the paper: which cells had stalled seeds (or that none did)."""
    hit = [r for r in rows if r["n_stalled"]]
    if not hit:
        return "No seed stalled."
    cells = "; ".join(f"\\texttt{{{escape(r['cell'])}}} on \\texttt{{{escape(r['generator'])}}}, "
                      f"{r['n_stalled']} of {r['n_seeds']} seeds" for r in hit)
    return f"$^\\dagger$Stalled: {cells} (included in mean $\\pm$ std)."


def main(p: config.Params) -> None:
    rows = cell_rows(p)
    write_csv(paths.RESULTS / "ablations" / "table.csv",
              [{k: v for k, v in r.items() if k != "config"} for r in rows])
    out = ["% Generated by `dvc repro ablations` (src/clipbridge/stages/ablations.py). Do not edit.\n"]
    for axis in AXES:  # every table is defined; an axis without cells says so
        has_cells = any(r["cell"].split("-")[0] == axis for r in rows)
        body = table_tex(p, rows, axis) if has_cells else f"(no ablation cells on {axis} in params.yaml)\n"
        out.append(f"\\newcommand{{\\AblationTable{axis.capitalize()}}}{{%\n{body}}}\n")
    out.append(f"\\newcommand{{\\AblationStalledNote}}{{{stalled_note(rows)}}}\n")
    write_text(paths.GENERATED / "ablation_tables.tex", "".join(out))


if __name__ == "__main__":
    run(main)
