"""Stage ``distill``: distil the StyleGAN2-64 student ``sg2-64`` from the DCGAN teacher.

Reads params ``distill`` (:class:`clipbridge.config.DistillConfig`), ``device`` and the
student's layer groups ``edits.groups.sg2-64`` (for the hierarchy check). Trains,
resuming from the training state when present, up to ``distill.steps`` or for
``distill.time_budget_seconds``, then evaluates and writes:

- ``checkpoints/sg2-64.pt``: the student (loadable with
  :func:`clipbridge.models.stylegan2.load_checkpoint`) together with its training state (Adam
  second moments, curve, step), so training resumes from it exactly; committed, ~11 MB with
  the default config; must survive between runs (DVC ``persist: true``).
- ``results/distill/curve.csv`` (plot), ``results/distill/metrics.json`` (metrics),
  ``results/figures/teacher_student.pdf``.

Several processes: ``torchrun --nproc_per_node=N -m clipbridge.stages.distill`` trains the same
global batch with DDP (see clipbridge.distributed); every rank resumes from the checkpoint, and
rank 0 alone writes it and then evaluates and writes the other outputs.
"""

from __future__ import annotations

import dataclasses

from clipbridge import distributed, paths
from clipbridge.config import DistillConfig
from clipbridge.edits.offsets import groups_for
from clipbridge.io import finite, read_checkpoint, seed_everything, write_json
from clipbridge.models.dcgan import from_package
from clipbridge.offline.distill import evaluate, heldout_z, teacher_student_grid, train
from clipbridge.stages import run

GENERATOR = "sg2-64"   # the student's generator name (its layer groups: params edits.groups)
CHECKPOINT = paths.CHECKPOINTS / "sg2-64.pt"
CURVE = paths.RESULTS / "distill" / "curve.csv"
METRICS = paths.RESULTS / "distill" / "metrics.json"
FIGURE = paths.FIGURES / "teacher_student.pdf"
GRID_N = 8


def train_device() -> str:
    """The device of the run that last trained the committed checkpoint (its ``meta.device``)."""
    meta = read_checkpoint(CHECKPOINT, what="student checkpoint").get("meta") or {}
    return meta.get("device", "not recorded")


def main(p) -> None:
    """``p``: anything with ``distill`` (a DistillConfig), ``edits.groups`` and ``device`` (config.Params in
    the pipeline)."""
    cfg: DistillConfig = p.distill
    seed_everything(cfg.seed)
    teacher, teacher_sha = from_package()
    with distributed.session(p.device) as device:   # no-op unless launched by torchrun
        teacher = teacher.to(device)
        G, state = train(cfg, CHECKPOINT, CURVE, device=device, resume=True, teacher=teacher)
    if not distributed.is_main():
        return
    if not state["done"]:
        print(f"distill: stopped at step {state['step']}/{cfg.steps} (time budget); outputs describe that step")
    groups = groups_for(p.edits, GENERATOR, G)
    metrics = evaluate(G, teacher, groups, n=cfg.final_eval_n, seed=cfg.seed, lpips_seed=cfg.lpips_seed,
                       n_hierarchy=cfg.final_eval_hierarchy_n)
    write_json(METRICS, finite({**metrics, "step": state["step"], "steps": cfg.steps, "done": state["done"],
                                "train_seconds": round(state["seconds"], 1), "train_device": train_device(),
                                "eval_device": str(p.device),
                                "lpips_variant": "LPIPS-rand", "teacher_sha256": teacher_sha,
                                "checkpoint_mb": round(CHECKPOINT.stat().st_size / 2**20, 2),
                                "config": dataclasses.asdict(cfg)}))
    teacher_student_grid(G, teacher, heldout_z(GRID_N, cfg.seed, device), FIGURE)


if __name__ == "__main__":
    run(main)
