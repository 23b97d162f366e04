"""Typed view of ``params.yaml``: one frozen dataclass per section, unknown keys are errors.

Each stage calls :func:`load` once and passes the section it needs to pure functions.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clipbridge import paths
from clipbridge.errors import BadValueError


class ConfigError(BadValueError):
    """A params file is missing, malformed, or has unknown / mistyped keys."""


@dataclass(frozen=True)
class OptimConfig:
    """Projector-style optimization (src/clipbridge/bridge/invert.py; params ``evaluate.opt``)."""
    steps: int = 200                # optimization steps per image batch
    lr: float = 0.05                # Adam learning rate in the normalized latent space
    mse_weight: float = 1.0         # weight of the pixel MSE on [-1, 1]
    lpips_weight: float = 1.0       # weight of LPIPS (the profile's variant)
    noise: float = 0.05             # latent noise at step 0, in units of std, ramped to 0 (NVlabs projector)
    noise_ramp: float = 0.75        # fraction of the steps over which the noise decays (quadratically)
    seed: int = 0                   # seed of the latent noise


@dataclass(frozen=True)
class DistillConfig:
    """All knobs of the distillation (params.yaml section ``distill``). Defaults = best CPU recipe."""

    seed: int = 0                       # student init and training-z stream
    # student architecture (StyleGAN2 'skip'; channels at resolution r: min(channel_base // r, channel_max))
    img_resolution: int = 64            # student output; < 64 = teacher area-downsampled (tests)
    w_dim: int = 256                    # W size
    mapping_layers: int = 2             # fully connected layers of the mapping (StyleGAN: 8)
    mapping_lr_multiplier: float = 1.0  # StyleGAN's 0.01 stalls distillation (DESIGN.md)
    channel_base: int = 2048            # 4-16 px: 128 ch, 32 px: 64, 64 px: 32
    channel_max: int = 128
    use_noise: bool = False             # per-pixel noise inputs (the teacher has none)
    fused_modconv: bool = False         # grouped-conv modulation; False (scale activations) is faster on CPU
    # optimization
    batch: int = 8                      # per CPU-minute 8 edged out 16 (benchmarks/distill.py)
    steps: int = 200_000                # schedule length (~11 h at 0.2 s/step): cosine to lr * lr_final
    lr: float = 5e-3
    lr_final: float = 0.02              # final lr as a fraction of lr
    warmup_steps: int = 20              # linear warmup from 0
    beta1: float = 0.0                  # Adam betas (StyleGAN2: 0, 0.99)
    beta2: float = 0.99
    ema_beta: float = 0.0               # EMA of the weights per step; 0 = no EMA (saved model = trained weights)
    # losses (all on images in [-1, 1])
    loss_l1: float = 1.0                # L1 on the final image
    loss_l2: float = 0.0                # MSE on the final image
    loss_multiscale: float = 1.0        # L1 of every intermediate toRGB image vs the downsampled teacher (summed)
    loss_lpips: float = 0.0             # LPIPS-rand (random AlexNet trunk) on the final image
    lpips_seed: int = 0
    # bookkeeping
    threads: int = 1                    # torch CPU threads while training; 0 = leave as is. On the shared
                                        # 2-core machine 1 thread ran 2.5x faster than 2 (oversubscribed)
    log_every: int = 50                 # curve row every N steps (training loss terms, lr, seconds)
    eval_every: int = 500               # held-out PSNR every N steps (and at the end); 0 = never
    eval_n: int = 64                    # held-out z (heldout_z) for the curve's PSNR
    checkpoint_every_seconds: float = 600.0
    final_eval_n: int = 1000            # held-out z for the final metrics (stage distill)
    final_eval_hierarchy_n: int = 200   # of those, z used for the layer-group check
    time_budget_seconds: float = 0.0    # stop cleanly (with a checkpoint) after this much wall time; 0 = none


DEFAULT_UNIT_SCALE: dict[str, float] = {"dcgan64": 0.2}  # edits.offsets docstring, "Offsets and units"


@dataclass(frozen=True)
class EditsConfig:
    """The layer-group study (params.yaml section ``edits``). Units: :mod:`clipbridge.edits.offsets`."""

    seed: int = 0                       # faces, offset directions, strip, bootstrap (separate streams)
    n_faces: int = 64                   # faces per generator; only z whose unedited face dlib finds
    n_draws: int = 2                    # random offset directions per face and group
    magnitudes: list[float] = field(default_factory=lambda: [0.45, 0.9, 1.35])  # offsets, in sigma_w
                                        # (W+) or log channel scale (DCGAN); = the report's steps 15/30/45
    verdict_magnitude: float | None = None  # magnitude the claims are judged at; None = the largest
    w_std_samples: int = 2048           # z mapped to estimate the per-dimension std of w (W+ unit)
    batch: int = 64                     # images per generator / measurement call
    bootstrap: int = 2000               # bootstrap resamples of faces for the 95% CIs
    lpips_seed: int = 0                 # seed of LPIPS-rand's random AlexNet trunk (offline profile)
    strip_step: float = 0.03            # the report's step, read in the units of `magnitudes`
    strip_steps: int = 50               # the report's step count
    strip_show: list[int] = field(default_factory=lambda: [0, 15, 30, 45])  # steps shown (report)
    groups: dict[str, dict[str, list[int]]] = field(default_factory=dict)
                                        # generator -> group name -> [start, stop) layers, coarse to fine;
                                        # defined only in params.yaml (none here)
    unit_scale: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_UNIT_SCALE))
                                        # generator -> offset units per magnitude unit; absent = 1

    def __post_init__(self) -> None:
        src = f"{paths.PARAMS}: edits"
        checks = [
            (self.n_faces >= 1, f"{src}.n_faces must be >= 1, got {self.n_faces}"),
            (self.n_draws >= 1, f"{src}.n_draws must be >= 1, got {self.n_draws}"),
            (self.batch >= 1, f"{src}.batch must be >= 1, got {self.batch}"),
            (self.bootstrap >= 1, f"{src}.bootstrap must be >= 1, got {self.bootstrap}"),
            (self.w_std_samples >= 2, f"{src}.w_std_samples must be >= 2, got {self.w_std_samples}"),
            (len(self.magnitudes) > 0 and all(m >= 0 for m in self.magnitudes),
             f"{src}.magnitudes must be a non-empty list of numbers >= 0, got {self.magnitudes}"),
            (len(set(self.magnitudes)) == len(self.magnitudes), f"{src}.magnitudes has duplicates: {self.magnitudes}"),
            (self.verdict_magnitude is None or self.verdict_magnitude in self.magnitudes,
             f"{src}.verdict_magnitude {self.verdict_magnitude} is not one of magnitudes {self.magnitudes}"),
            (self.strip_steps >= 1 and len(self.strip_show) > 0
             and all(0 <= k < self.strip_steps for k in self.strip_show),
             f"{src}.strip_show {self.strip_show} must be non-empty steps in [0, strip_steps={self.strip_steps})"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        for gen, scale in self.unit_scale.items():
            if not scale > 0:
                raise ConfigError(f"{src}.unit_scale.{gen} must be > 0, got {scale}")
        for gen, groups in self.groups.items():
            for name, rng in groups.items():
                if len(rng) != 2 or not 0 <= rng[0] < rng[1]:
                    raise ConfigError(f"{src}.groups.{gen}.{name} = {rng} is not a half-open range "
                                     f"[start, stop) with 0 <= start < stop")

    @property
    def judged_magnitude(self) -> float:
        return max(self.magnitudes) if self.verdict_magnitude is None else self.verdict_magnitude

    def scale_of(self, generator: str) -> float:
        return float(self.unit_scale.get(generator, 1.0))



@dataclass(frozen=True)
class ProfileModels:
    encoder: str                    # encoder registry name (see registry.ENCODERS)
    lpips: str = "LPIPS-rand"       # the loss: 'LPIPS-rand' (random AlexNet trunk, offline) | 'LPIPS' (ImageNet trunk)
    lpips_metric: str | None = None # the reported perceptual metric, one no method optimizes: 'ST-LPIPS'
                                    # (trained shift-tolerant AlexNet, offline) | 'LPIPS'; None = `lpips`

    @property
    def metric(self) -> str:
        return self.lpips_metric or self.lpips
    downloads: bool = False         # may this profile download weights (NVlabs generators, OpenAI CLIP)?


@dataclass(frozen=True)
class Models:
    seed: int = 0                   # seed for any randomly initialized (placeholder) weights
    mirror: str | None = None       # local directory searched before any download; None = none


@dataclass(frozen=True)
class Dataset:
    seed: int = 0
    n_train: int = 4096             # generated (z, image, embedding) triples for training
    n_val: int = 256
    n_test: int = 256
    batch: int = 64                 # generation / encoding batch
    truncation_psi: float = 1.0     # 1.0 = no truncation


@dataclass(frozen=True)
class ClipData:
    seed: int = 0
    generators: list[str] = field(default_factory=lambda: ["dcgan64"])  # faces come from these, equally
    n_train: int = 8192             # captioned faces to train the offline CLIP on
    n_test: int = 1024              # held-out captioned faces for retrieval / zero-shot / probe
    captions_per_image: int = 4     # distinct captions sampled per face (one is drawn per step)
    batch: int = 64                 # generation / annotation batch


@dataclass(frozen=True)
class Clip:
    seed: int = 0
    embed_dim: int = 256            # joint embedding size
    patch_size: int = 8             # ViT patch (64 px input)
    width: int = 256                # ViT width
    layers: int = 6                 # ViT blocks
    heads: int = 4                  # ViT heads
    steps: int = 300
    batch: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 30
    schedule: str = "cosine"        # cosine | constant
    slip_weight: float = 0.5        # SimCLR term between two views of a face (SLIP); 0 = plain CLIP
    ckpt_seconds: float = 300.0     # checkpoint at least this often (resume after interruption)
    probe_alpha: float = 1.0        # ridge strength of the latent probe
    precision: str = "fp32"         # fp32 | bf16 (autocast; ~2x faster on CPU, clip_model.autocast)
    eval_every: int = 0             # held-out loss and recall@1 in the curve every this many steps (0 = off)


@dataclass(frozen=True)
class Train:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # headline bridges: one per seed (mean +- std)
    seed: int = 0                   # the seed of one run (set per run from ``seeds``)
    depth: int = 4                  # number of Linear layers (report: 4)
    width: int = 1024               # hidden width (report: 1024)
    activation: str = "relu"        # report: ReLU
    target: str = "z"               # z (report) | w | w+
    steps: int = 1500
    batch: int = 32
    batch_by_generator: dict[str, int] = field(default_factory=dict)  # per-generator batch; others use batch
    lr: float = 1e-4
    loss_rgb: float = 1.0           # MSE on [-1, 1] pixels (the report's loss)
    loss_lpips: float = 0.0         # LPIPS (profile's variant)
    loss_latent: float = 0.0        # MSE to the known latent of a generated face
    log_every: int = 25             # curve resolution (steps)
    init_output_std: float | None = 1.0  # data-dependent init: std of the initial outputs (normalized space); None = PyTorch default
    predict_groups: list[str] | None = None  # w+ only: layer groups (edits.groups) the bridge predicts; others = w_avg

    def batch_for(self, generator: str) -> int:
        return self.batch_by_generator.get(generator, self.batch)


@dataclass(frozen=True)
class AblationCell:
    """One ablation cell: a generator and the fields of ``train`` it changes (None = headline's)."""
    generator: str
    depth: int | None = None
    width: int | None = None
    activation: str | None = None
    target: str | None = None
    loss_rgb: float | None = None
    loss_lpips: float | None = None
    loss_latent: float | None = None
    predict_groups: list[str] | None = None

    def train_config(self, base: Train, steps: int, seed: int) -> Train:
        changes = {k: v for k, v in dataclasses.asdict(self).items() if k != "generator" and v is not None}
        return dataclasses.replace(base, steps=steps, seed=seed, **changes)


@dataclass(frozen=True)
class Ablate:
    steps: int = 300                # training steps of every cell (the headline trains train.steps)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    cells: dict[str, AblationCell] = field(default_factory=dict)
    bootstrap: int = 2000           # resamples of test faces for each cell's paired PSNR difference
    bootstrap_seed: int = 0


@dataclass(frozen=True)
class Evaluate:
    seed: int = 0
    batch: int = 64
    lpips_seed: int = 0             # seed for the random-weight LPIPS of the offline profile
    n_opt: int = 32                 # test faces the optimization methods run on (all methods are also scored there)
    n_opt_by_generator: dict[str, int] = field(default_factory=dict)  # per-generator n_opt; others use n_opt
    opt: OptimConfig = field(default_factory=OptimConfig)  # optimization from w_avg (W and W+)
    refine_steps: int = 20          # bridge + k optimization steps (W+ where the generator has it, else W)
    record_at: list[int] = field(default_factory=lambda: [5, 10, 20, 50, 100])  # optimization checkpoints scored for the speed/quality curve
    attributes: bool = True         # score age, gender, identity (dlib) per method
    bootstrap: int = 2000           # resamples of the optimization faces for paired intervals and gap closed

    def n_opt_for(self, generator: str) -> int:
        return self.n_opt_by_generator.get(generator, self.n_opt)


@dataclass(frozen=True)
class Photos:
    seed: int = 0
    files: list[str] = field(default_factory=lambda: ["astronaut.png", "grace_hopper.jpg"])  # in data/faces/
    report_lr: float = 1e-5         # the report's one-photo experiment: Adam learning rate
    report_steps: int = 200         # ... and its steps (RGB loss)


@dataclass(frozen=True)
class Figures:
    n_grid: int = 8                 # faces in the reconstruction grid
    retrieval: list[str] = field(default_factory=lambda: ["lighting=bright", "background=black"])
                                    # CLIP retrieval figure: 'attribute=value' queries (held-out paraphrase wording)
    retrieval_k: int = 6            # faces retrieved per query


@dataclass(frozen=True)
class LearnedEncoder:
    """The learned encoder of the encoder study: a small CNN from the face image to the bridge's
    target, trained end to end with the bridge's loss (the pSp / e4e idea at this data size)."""
    channels: int = 32              # width of its first stage (doubled at each downsampling)
    lrs: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3])  # candidates, chosen on the val faces
    select_steps: int = 300         # steps of each candidate's selection run (seed 0); lowest val MSE wins


@dataclass(frozen=True)
class Encoders:
    """The encoder study: the same bridge recipe (``train``) on several encoders, to convergence.

    A run stops at the first logged step ``s >= min_steps`` where the best validation MSE of the
    last ``plateau_window`` of steps improves on the best before them by less than ``plateau_tol``
    (relative), or at ``max_steps``; the model of the best validation MSE is kept.
    """
    generators: list[str] = field(default_factory=lambda: ["dcgan64"])  # generators the axis runs on
    encoders: list[str] = field(default_factory=lambda: ["clip-offline"])  # embedding encoders (models.encoders)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    max_steps: int = 4000           # upper bound of every run
    min_steps: int = 1000           # never stop before this
    eval_every: int = 100           # validation MSE in the curve (and the stopping check) every this many steps
    plateau_window: float = 0.2     # fraction of the steps so far that the stopping rule looks back over
    plateau_tol: float = 0.01       # relative improvement of the best validation MSE below which it stops
    score_at: list[int] = field(default_factory=lambda: [300, 1000])  # test faces also scored at these steps
    probe_alpha: float = 1.0        # ridge strength of the embedding -> latent probe
    learned: LearnedEncoder = field(default_factory=LearnedEncoder)
    fresh: list[str] = field(default_factory=list)  # rows also trained on fresh faces every step ('learned' or an encoder)
    fresh_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


@dataclass(frozen=True)
class Params:
    profile: str                    # key of `profiles`: 'offline' (default) or 'pretrained'
    profiles: dict[str, ProfileModels]
    generators: list[str]           # generators the bridge study runs on (registry names; DVC foreach)
    device: str = "cpu"             # torch device for every stage ('cpu', 'cuda', 'cuda:1', ...)
    models: Models = field(default_factory=Models)
    dataset: Dataset = field(default_factory=Dataset)
    clip_data: ClipData = field(default_factory=ClipData)
    clip: Clip = field(default_factory=Clip)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: Train = field(default_factory=Train)
    ablate: Ablate = field(default_factory=Ablate)
    edits: EditsConfig = field(default_factory=EditsConfig)
    photos: Photos = field(default_factory=Photos)
    evaluate: Evaluate = field(default_factory=Evaluate)
    figures: Figures = field(default_factory=Figures)
    encoders: Encoders = field(default_factory=Encoders)

    @property
    def active(self) -> ProfileModels:
        """The models of the selected profile."""
        return self.profiles[self.profile]

    @property
    def headline(self) -> str:
        """The generator of the headline results: the first of ``generators``."""
        return self.generators[0]


def _build(cls, raw, where: str, source: Path):
    """Recursively build dataclass ``cls`` from ``raw``; reject unknown keys and wrong types."""
    if dataclasses.is_dataclass(cls):
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: section '{where}' must be a mapping, got {type(raw).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown} in '{where}'; valid: {sorted(names)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in raw:
                kwargs[f.name] = _build(hints[f.name], raw[f.name], f"{where}.{f.name}".lstrip("."), source)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: missing key '{f.name}' in '{where or 'top level'}'")
        return cls(**kwargs)
    origin = typing.get_origin(cls)
    if origin is list:
        (itype,) = typing.get_args(cls)
        if not isinstance(raw, list):
            raise ConfigError(f"{source}: '{where}' must be a list")
        return [_build(itype, v, f"{where}[{i}]", source) for i, v in enumerate(raw)]
    if origin is dict:
        _, vtype = typing.get_args(cls)
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: '{where}' must be a mapping")
        return {k: _build(vtype, v, f"{where}.{k}", source) for k, v in raw.items()}
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(cls)
        if raw is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _build(inner, raw, where, source)
    if cls is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if cls in (int, float, str, bool) and (not isinstance(raw, cls) or (cls is int and isinstance(raw, bool))):
        raise ConfigError(f"{source}: '{where}' must be {cls.__name__}, got {raw!r}")
    return raw


def from_dict(raw: dict, source: Path = paths.PARAMS) -> Params:
    params = _build(Params, raw, "", source)
    if params.profile not in params.profiles:
        raise ConfigError(f"{source}: unknown profile '{params.profile}'; available: {sorted(params.profiles)}")
    _check_generators(params, source)
    return params


def _check_generators(params: Params, source: Path) -> None:
    from clipbridge.registry import GENERATORS

    names = (list(params.generators) + [c.generator for c in params.ablate.cells.values()]
             + list(params.encoders.generators))
    unknown = sorted({g for g in names if g not in GENERATORS})
    if not params.generators or unknown:
        raise ConfigError(f"{source}: unknown or no generator(s) {unknown} in 'generators' / 'ablate.cells' / 'encoders.generators'; "
                          f"available: {sorted(GENERATORS)}")
    if not params.active.downloads:
        remote = sorted({g for g in names if GENERATORS[g].downloads})
        if remote:
            raise ConfigError(f"{source}: generator(s) {remote} download weights, which profile '{params.profile}' "
                              f"does not allow; offline generators: {sorted(g for g, e in GENERATORS.items() if not e.downloads)}")


def load(path: Path | str = paths.PARAMS) -> Params:
    """Read and validate the params file (default: ``params.yaml`` in the working directory)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return from_dict(raw, path)
