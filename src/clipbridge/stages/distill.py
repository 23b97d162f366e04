"""Stage ``distill``: distil the StyleGAN2-64 student ``sg2-64`` from the DCGAN teacher.

Reads params ``distill`` (:class:`clipbridge.distill.DistillConfig`) and ``device``. Trains,
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
from clipbridge.distill import DistillConfig, evaluate, heldout_z, teacher_student_grid, train
from clipbridge.io import seed_everything, write_json
from clipbridge.models.dcgan import from_package
from clipbridge.stages import run

CHECKPOINT = paths.CHECKPOINTS / "sg2-64.pt"
CURVE = paths.RESULTS / "distill" / "curve.csv"
METRICS = paths.RESULTS / "distill" / "metrics.json"
FIGURE = paths.FIGURES / "teacher_student.pdf"
GRID_N = 8


def main(p) -> None:
    """``p``: anything with ``distill`` (a DistillConfig) and ``device`` (config.Params in the pipeline)."""
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
    metrics = evaluate(G, teacher, n=cfg.final_eval_n, seed=cfg.seed, lpips_seed=cfg.lpips_seed,
                       n_hierarchy=cfg.final_eval_hierarchy_n)
    write_json(METRICS, _finite({**metrics, "step": state["step"], "steps": cfg.steps, "done": state["done"],
                                 "train_seconds": round(state["seconds"], 1), "device": str(p.device),
                                 "lpips_variant": "LPIPS-rand", "teacher_sha256": teacher_sha,
                                 "checkpoint_mb": round(CHECKPOINT.stat().st_size / 2**20, 2),
                                 "config": dataclasses.asdict(cfg)}))
    teacher_student_grid(G, teacher, heldout_z(GRID_N, cfg.seed, device), FIGURE)


def _finite(obj):
    """NaN -> None recursively (JSON has no NaN)."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


if __name__ == "__main__":
    run(main)
