"""The ``clipbridge`` command line on tiny models: outputs, bad input, fuzzing, determinism."""

import io
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from clipbridge.cli.main import main as cli
from clipbridge.offline import clip_model
from clipbridge.models.bridge import Bridge
from clipbridge.models.dcgan import DCGANGenerator
from clipbridge.models.stylegan2 import Generator
from helpers import ROOT

ASTRONAUT = ROOT / "data" / "faces" / "astronaut.png"
TINY_CLIP = clip_model.OfflineClipConfig(embed_dim=32, image_size=32, patch_size=8, width=64, layers=2, heads=2, slip_dim=16)
SG2_GROUPS = {"coarse": [0, 3], "middle": [3, 5], "fine": [5, 8]}
DC_GROUPS = {"4px": [0, 1], "8px": [1, 2], "16px": [2, 3], "32px": [3, 4]}


def save_generator(G, kind: str, name: str, path: Path) -> Path:
    torch.save({"kind": kind, "state_dict": G.state_dict(), "init_kwargs": G.init_kwargs,
                "meta": {"name": name}}, path)
    return path


def save_bridge(bridge: Bridge, path: Path) -> Path:
    torch.save({"kind": "bridge", "state_dict": bridge.state_dict(), "init_kwargs": bridge.init_kwargs}, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny model files and a params.yaml for them: dcgan (64 px, z) and sg2 (32 px, W+); the files
    are passed with --*-file, params (read by config.load) gives the layer groups and settings."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    files = {"encoder": d / "encoder.pt"}
    clip_model.save_checkpoint(clip_model.build_model(TINY_CLIP), TINY_CLIP, files["encoder"], step=0)
    dcgan = DCGANGenerator(z_dim=6, ngf=4)
    files["dcgan"] = save_generator(dcgan, "dcgan", "tiny-dcgan", d / "dcgan.pt")
    files["dcgan_bridge"] = save_bridge(Bridge(32, 6, depth=2, width=16, target="z"), d / "dcgan_bridge.pt")
    sg2 = Generator(8, 0, 8, 32, 3, mapping_kwargs=dict(num_layers=2),
                    synthesis_kwargs=dict(channel_base=256, channel_max=8))
    files["sg2"] = save_generator(sg2, "stylegan2", "tiny-sg2", d / "sg2.pt")
    files["sg2_bridge"] = save_bridge(Bridge(32, 8, depth=2, width=16, target="w+", num_ws=sg2.num_ws,
                                             latent_mean=sg2.mapping.w_avg), d / "sg2_bridge.pt")
    files["params"] = d / "params.yaml"
    files["params"].write_text(yaml.safe_dump({
        "profile": "offline", "generators": ["dcgan64", "sg2-64"],
        "profiles": {"offline": {"encoder": "clip-offline", "lpips": "LPIPS-rand"}},
        "evaluate": {"lpips_seed": 0, "opt": {"steps": 200, "lr": 0.05, "mse_weight": 1.0, "lpips_weight": 0.0}},
        "edits": {"groups": {"tiny-sg2": SG2_GROUPS, "tiny-dcgan": DC_GROUPS},
                  "strip_step": 0.3, "strip_steps": 10, "strip_show": [0, 3, 6, 9], "w_std_samples": 64},
    }, sort_keys=False))                      # groups keep their coarse-to-fine order
    return files


def model_args(models, gen: str = "sg2") -> list[str]:
    return ["--params", str(models["params"]), "--generator-file", str(models[gen]),
            "--encoder-file", str(models["encoder"]), "--bridge-file", str(models[f"{gen}_bridge"])]


def run(capsys, argv) -> tuple[int, str, str]:
    code = cli([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words, status=1):
    assert code == status, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for w in words:
        assert str(w) in lines[0], (w, lines[0])


def no_outputs(out: Path) -> bool:
    """Neither the output directory nor a staging directory beside it exists."""
    return not out.exists() and not list(out.parent.glob(".clipbridge-*"))


def png(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


# ------------------------------------------------------------------------------- commands


def test_help_lists_commands_and_examples(capsys):
    code, out, _ = run(capsys, ["--help"])
    assert code == 0 and "invert" in out and "edit" in out and "text" in out and "examples:" in out
    code, out, _ = run(capsys, ["invert", "--help"])
    assert code == 0 and "--refine" in out and "--no-align" in out and "--generator-file" in out
    code, _, err = run(capsys, [])
    assert_one_line_error(code, err, "choose a command", status=2)
    code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", "x", "--refine", "-3"])
    assert_one_line_error(code, err, "--refine", status=2)


def test_invert_aligned_photo_on_dcgan(models, tmp_path, capsys):
    out = tmp_path / "out" / "me"
    code, stdout, err = run(capsys, ["invert", ASTRONAUT, "--out", out, *model_args(models, "dcgan")])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["input.png", "latent.pt", "reconstruction.png", "side_by_side.png"]
    assert png(out / "input.png").shape == (64, 64, 3) and png(out / "reconstruction.png").shape == (64, 64, 3)
    assert png(out / "side_by_side.png").shape == (256, 2 * 256 + 2, 3)
    latent = torch.load(out / "latent.pt", weights_only=True)
    assert latent["ws"].shape == (1, 1, 6) and latent["generator"] == "tiny-dcgan" and latent["refine_steps"] == 0
    assert "face aligned from 68 landmarks" in stdout and "zoom 1.00" in stdout   # random weights: no faces to measure
    assert not list(out.parent.glob(".clipbridge-*"))


def test_refine_improves_the_fit_and_is_deterministic(models, tmp_path, capsys):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", out, "--refine", "15", "--zoom", "1",
                                    "--seed", "3", *model_args(models)])
        assert code == 0, err
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == ["bridge.png", "input.png", "latent.pt", "reconstruction.png", "side_by_side.png"]
    for name in names:   # byte-identical outputs on CPU
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    target = png(outs[0] / "input.png").astype(float)
    assert png(outs[0] / "input.png").shape == (32, 32, 3)
    mse = {n: ((png(outs[0] / n).astype(float) - target) ** 2).mean() for n in ("bridge.png", "reconstruction.png")}
    assert mse["reconstruction.png"] < mse["bridge.png"]
    assert torch.load(outs[0] / "latent.pt", weights_only=True)["ws"].shape == (1, 8, 8)


def test_edit_writes_the_report_strip(models, tmp_path, capsys):
    out = tmp_path / "edit"
    code, stdout, err = run(capsys, ["edit", ASTRONAUT, "--out", out, "--zoom", "1", *model_args(models)])
    assert code == 0, err
    strip = png(out / "strip.png")
    panel = 256 + 2                       # 32 px panels enlarged 8x, 2 px gutters
    assert strip.shape == (3 * panel - 2, 4 * panel - 2, 3)
    legend = (out / "strip.json").read_text()
    assert '"group": "coarse"' in legend and '"step": 9' in legend and "strip row 2: group fine" in stdout
    # column 0 is the unedited face; the edits move the image; one group alone gives the same row
    first = strip[:256, :256]
    assert np.array_equal(first, strip[panel:panel + 256, :256])
    assert not np.array_equal(first, strip[:256, 3 * panel:3 * panel + 256])
    one = tmp_path / "one"
    code, _, err = run(capsys, ["edit", ASTRONAUT, "--out", one, "--zoom", "1", "--group", "middle",
                                *model_args(models)])
    assert code == 0, err
    assert np.array_equal(png(one / "strip.png"), strip[panel:2 * panel - 2])
    code, _, err = run(capsys, ["edit", ASTRONAUT, "--out", tmp_path / "bad", "--group", "nose", *model_args(models)])
    assert_one_line_error(code, err, "nose", "available", "coarse", status=2)
    assert no_outputs(tmp_path / "bad")


def test_edit_on_dcgan_channel_scales(models, tmp_path, capsys):
    out = tmp_path / "dc"
    code, _, err = run(capsys, ["edit", ASTRONAUT, "--out", out, "--zoom", "1", "--steps", "5", "--strength", "0.5",
                                "--group", "8px", *model_args(models, "dcgan")])
    assert code == 0, err
    assert png(out / "strip.png").shape[0] == 256 and '"step": 4' in (out / "strip.json").read_text()


def test_text_prompt_to_face(models, tmp_path, capsys):
    out = tmp_path / "text"
    code, _, err = run(capsys, ["text", "a smiling face looking left", "--out", out, *model_args(models)])
    assert code == 0, err
    assert png(out / "face.png").shape == (32, 32, 3)
    assert torch.load(out / "latent.pt", weights_only=True)["prompt"] == "a smiling face looking left"
    other = tmp_path / "other"
    assert run(capsys, ["text", "an old man with grey hair", "--out", other, *model_args(models)])[0] == 0
    assert not np.array_equal(png(out / "face.png"), png(other / "face.png"))
    code, _, err = run(capsys, ["text", "  ", "--out", tmp_path / "empty", *model_args(models)])
    assert_one_line_error(code, err, "empty", status=2)


def test_default_paths_come_from_params(models, tmp_path, capsys, monkeypatch):
    """No --*-file options: the generator is params' first `generators` entry, files at paths.*."""
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({"profile": "offline", "generators": ["dcgan64", "sg2-64"],
                                                   "profiles": {"offline": {"encoder": "clip-offline"}}}))
    out = tmp_path / "o"
    code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", out])
    assert_one_line_error(code, err, "data/models/generator-dcgan64.pt", "make repro")
    assert no_outputs(out)
    Path("data/models").mkdir(parents=True)
    Path("data/bridge/dcgan64").mkdir(parents=True)
    save_generator(DCGANGenerator(z_dim=6, ngf=4), "dcgan", "dcgan64", Path("data/models/generator-dcgan64.pt"))
    shutil.copy(models["encoder"], "data/models/encoder.pt")
    code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", out])
    assert_one_line_error(code, err, "data/bridge/dcgan64/seed0.pt", "make repro")
    shutil.copy(models["dcgan_bridge"], "data/bridge/dcgan64/seed0.pt")
    assert run(capsys, ["invert", ASTRONAUT, "--out", out, "--zoom", "1"])[0] == 0
    code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", out, "--generator", "sg2-64"])
    assert_one_line_error(code, err, "generator-sg2-64.pt", "make repro")
    code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", out, "--generator", "nope"])
    assert_one_line_error(code, err, "unknown generator 'nope'", "dcgan64", status=2)
    shutil.copy("data/models/generator-dcgan64.pt", "data/models/generator-sg2-64.pt")
    code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", out, "--generator", "sg2-64",
                                "--bridge-file", "data/bridge/dcgan64/seed0.pt"])
    assert_one_line_error(code, err, "generator-sg2-64.pt: holds generator 'dcgan64', not 'sg2-64'")
    Path("params.yaml").write_text(yaml.safe_dump({"profile": "offline",
                                                   "profiles": {"offline": {"generator": "dcgan64"}}}))
    code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", out, "--zoom", "1"])  # strict: config.load
    assert_one_line_error(code, err, "params.yaml", "unknown key(s) ['generator']")
    Path("params.yaml").unlink()
    code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", out])
    assert_one_line_error(code, err, "params.yaml not found", "--generator", status=2)


# ------------------------------------------------------------------------------- bad input


def bad_photos(d: Path) -> dict:
    d.mkdir()
    buf = ASTRONAUT.read_bytes()
    jpeg = d / "ok.jpg"
    Image.open(ASTRONAUT).convert("RGB").save(jpeg, quality=90)
    files = {
        "missing": (d / "my_face.jpg", None, "file not found"),
        "not an image": (d / "face.jpg", b"Dear diary, today I took a selfie.\n" * 10, "not an image"),
        "truncated png": (d / "cut.png", buf[: len(buf) // 3], "truncated or corrupt"),
        "truncated jpeg": (d / "cut.jpg", jpeg.read_bytes()[:5000], "truncated or corrupt"),
        "zero-size": (d / "empty.png", b"", "empty file"),
    }
    for path, data, _ in files.values():
        if data is not None:
            path.write_bytes(data)
    bomb = d / "bomb.png"
    Image.new("L", (4000, 3000)).save(bomb)
    files["bomb"] = (bomb, None, "decompression bomb")
    blank = d / "blank.png"
    Image.new("RGB", (200, 160), (90, 140, 200)).save(blank)
    files["no face"] = (blank, None, "no face found")
    return files


def test_bad_photos_one_line_exit_1_no_outputs(models, tmp_path, capsys):
    for name, (path, _, words) in bad_photos(tmp_path / "photos").items():
        out = tmp_path / "out" / name.replace(" ", "_")
        extra = ["--max-pixels", "10000000"] if name == "bomb" else []
        code, _, err = run(capsys, ["invert", path, "--out", out, *extra, *model_args(models)])
        assert_one_line_error(code, err, path, words)
        assert no_outputs(out), name
    _, _, err = run(capsys, ["invert", tmp_path / "photos" / "blank.png", "--out", tmp_path / "x", *model_args(models)])
    assert "--no-align" in err                             # the hint for a face the detector misses


def test_bad_model_files(models, tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02 not a checkpoint" * 50)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(models["sg2"].read_bytes()[:3000])
    wrong_kind = tmp_path / "wrong_kind.pt"
    torch.save({"kind": "bridge", "state_dict": {}, "init_kwargs": {}}, wrong_kind)
    cases = [("--generator-file", garbage, "not a readable model file"),
             ("--generator-file", truncated, "not a readable model file"),
             ("--generator-file", wrong_kind, "not a clipbridge model file"),
             ("--encoder-file", garbage, "not a readable model file"),
             ("--encoder-file", models["sg2"], "not a clipbridge model file"),
             ("--bridge-file", truncated, "not a readable model file"),
             ("--bridge-file", models["dcgan_bridge"], "trained for another generator"),
             ("--bridge-file", tmp_path / "absent.pt", "make repro")]
    for flag, path, words in cases:
        args = model_args(models)
        args[args.index(flag) + 1] = str(path)
        out = tmp_path / "out"
        code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", out, "--zoom", "1", *args])
        assert_one_line_error(code, err, path, words)
        assert no_outputs(out), (flag, path)


def test_unwritable_output(models, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out, words in ((blocker, "not a directory"), (blocker / "sub" / "out", "not a directory")):
        code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", out, "--no-align", *model_args(models)])
        assert_one_line_error(code, err, out, words)
    assert blocker.read_text() == "x"
    if os.geteuid() != 0:  # root writes anywhere: the permission check needs an ordinary user
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", locked / "out", "--no-align", *model_args(models)])
        assert_one_line_error(code, err, "not writable")
        assert list(locked.iterdir()) == []


def test_bad_device_and_params(models, tmp_path, capsys):
    code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", tmp_path / "o", "--device", "toaster",
                                *model_args(models)])
    assert_one_line_error(code, err, "--device toaster", status=2)
    if not torch.cuda.is_available():
        code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", tmp_path / "o", "--device", "cuda",
                                    *model_args(models)])
        assert_one_line_error(code, err, "CUDA is not available", status=2)
    broken = tmp_path / "params.yaml"
    broken.write_text("edits: {groups: [unclosed\n")
    args = model_args(models)
    args[args.index("--params") + 1] = str(broken)
    code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", tmp_path / "o", *args])
    assert_one_line_error(code, err, broken, "not valid YAML")
    assert no_outputs(tmp_path / "o")
    code, _, err = run(capsys, ["invert", ASTRONAUT, "--out", tmp_path / "o", "--profile", "nope",
                                *model_args(models)])
    assert_one_line_error(code, err, models["params"], "unknown profile 'nope'", "offline", status=2)


def fuzz_inputs(n: int, seed: int = 0) -> list[bytes]:
    """Random bytes, truncations and byte flips of small faceless images in every supported format."""
    rng = random.Random(seed)
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    valid = []
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt)
        valid.append(buf.getvalue())
    cases = []
    for i in range(n):
        base = valid[i % len(valid)]
        kind = i % 4
        if kind == 0:
            cases.append(rng.randbytes(rng.randint(0, 3000)))
        elif kind == 1:
            cases.append(base[:rng.randint(1, len(base) - 1)])
        elif kind == 2:
            b = bytearray(base)
            for _ in range(rng.randint(1, 20)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            cases.append(bytes(b))
        else:
            cases.append(base[:rng.randint(8, 64)] + rng.randbytes(rng.randint(0, 2000)))
    return cases


def test_fuzz_never_tracebacks(models, tmp_path, capsys):
    path = tmp_path / "fuzz.img"
    out = tmp_path / "out"
    for i, data in enumerate(fuzz_inputs(300)):
        path.write_bytes(data)
        code, _, err = run(capsys, ["invert", path, "--out", out, *model_args(models)])
        assert code == 1 and len(err.splitlines()) == 1 and err.startswith(f"error: {path}: "), (i, err)
        assert no_outputs(out), i


# ------------------------------------------------------------------------------- installed script


def test_console_script_end_to_end(models, tmp_path):
    script = shutil.which("clipbridge", path=str(Path(sys.executable).parent)) or shutil.which("clipbridge")
    assert script, "the clipbridge console script is not installed (pip install -e .)"
    out = tmp_path / "script"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([script, "invert", str(ASTRONAUT), "--out", str(out), "--zoom", "1",
                           *model_args(models, "dcgan")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "reconstruction.png").is_file() and f"wrote {out}" in done.stdout
    bad = subprocess.run([script, "invert", str(tmp_path / "my_face.jpg"), "--out", str(out / "x"),
                          *model_args(models, "dcgan")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1 and bad.stderr == f"error: {tmp_path / 'my_face.jpg'}: file not found\n"
