"""Repository-relative paths. The only module-level constants of the package.

Every path is relative to the repository root, which is the current working directory when
DVC runs a stage (``dvc repro`` runs commands from the directory holding ``dvc.yaml``).
"""

from pathlib import Path

PARAMS = Path("params.yaml")
DATA = Path("data")
MODELS = DATA / "models"          # DVC-cached materialized weights of the active profile
DATASET = DATA / "dataset"        # DVC-cached latents, images, embeddings
FACES = DATA / "faces"            # committed real public-domain photos (qualitative results)
RESULTS = Path("results")         # committed metrics, curves, figures
FIGURES = RESULTS / "figures"
CHECKPOINTS = Path("checkpoints")  # committed small checkpoints of the model-making stages
PAPER = Path("paper")
GENERATED = PAPER / "generated"   # committed TeX written by the pipeline
ENCODER = MODELS / "encoder.pt"   # the profile's CLIP image/text encoder
STUDY = RESULTS / "encoders"      # the encoder study's table, metrics and comparisons (stage encoders)
STUDY_RUNS = STUDY / "runs"       # its runs' committed curves and per-face scores (stages learned_lr, study)


def generator_file(name: str) -> Path:
    """Materialized generator ``name`` (one per name in ``params.generators``)."""
    return MODELS / f"generator-{name}.pt"


def dataset_split(generator: str, split: str) -> Path:
    """``{z, ws, images uint8, emb}`` of one split of ``generator``'s faces."""
    return DATASET / generator / f"{split}.pt"


def bridge_file(generator: str, seed: int = 0) -> Path:
    """The headline bridge trained on ``generator`` with training seed ``seed``."""
    return DATA / "bridge" / generator / f"seed{seed}.pt"


def ablate_dir(cell: str, seed: int | str) -> Path:
    """One ablation cell and seed's DVC-cached outputs: ``bridge.pt`` and its ``curve.csv``."""
    return DATA / "ablate" / f"{cell}-{seed}"


def embedding_file(generator: str, encoder: str) -> Path:
    """``{train, val, test}`` embeddings of ``generator``'s dataset faces by ``encoder`` (encoder study)."""
    return DATA / "embeddings" / generator / f"{encoder}.pt"


def study_results(generator: str, row: str, seed: int | str) -> Path:
    """One run of the encoder study (committed): ``curve.csv``, per-face ``scores.csv`` /
    ``scores_at.csv`` and ``run.json``. The study's tables sit in ``STUDY``, beside ``STUDY_RUNS``."""
    return STUDY_RUNS / generator / row / f"seed{seed}"
