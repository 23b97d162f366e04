"""Stage ``photos``: the real public-domain photos of ``data/faces/`` through every method (DVC ``foreach``).

``python -m clipbridge.stages.photos NAME``. Each photo is read and its face aligned from dlib
landmarks at the framing the generator's own faces have (:func:`clipbridge.cli.photo.generator_zoom`),
then reconstructed by the mean latent, the first headline bridge, bridge + refine, optimization
(W, and W+ where the generator has it), and the report's own experiment: a fresh report bridge
trained on that one photo with Adam, learning rate ``photos.report_lr``, ``photos.report_steps``
steps, RGB loss.

Outputs (committed): ``results/photos/<name>/metrics.json`` (PSNR / LPIPS per photo and method,
the report baseline's loss before and after) and ``results/figures/photos_<name>.pdf``.
"""

from __future__ import annotations

import dataclasses

import torch

from clipbridge import config, paths, registry
from clipbridge.bridge import invert
from clipbridge.bridge.evaluate import Scorer, synthesize
from clipbridge.bridge.train import build_bridge, train_on_one_photo
from clipbridge.cli import photo
from clipbridge.io import finite, seed_everything, write_json
from clipbridge.report import figures
from clipbridge.stages import profile_lpips, profile_metric, run


def main(p: config.Params, generator: str) -> None:
    cfg = p.photos
    seed_everything(cfg.seed)
    G = registry.load_generator(paths.generator_file(generator)).to(p.device)
    encoder = registry.load_encoder(paths.ENCODER).to(p.device)
    bridge = registry.load_bridge(paths.bridge_file(generator, p.train.seeds[0])).to(p.device)
    zoom, n_found = photo.generator_zoom(G)
    names = sorted(cfg.files)
    images = torch.cat([photo.load_face(paths.FACES / f, G.img_resolution, zoom=zoom) for f in names]).to(p.device)
    lpips, metric = profile_lpips(p), profile_metric(p)     # the loss; the reported metric
    scorer = Scorer(images, metric, batch=len(names), attributes=False)
    std = invert.latent_std(G)
    space = "w+" if invert.has_w_plus(G) else "w"
    space_is_z = not getattr(G, "has_style_space", True)   # the DCGAN: its one latent is z
    with torch.no_grad():
        bridge_ws = invert.bridge_ws(G, encoder, bridge, images)
    ws = {"mean_latent": invert.mean_ws(G, len(names)), "bridge": bridge_ws}
    ws["bridge_refine"], _ = invert.optimize(G, images, bridge_ws, space,
                                             dataclasses.replace(p.evaluate.opt, steps=p.evaluate.refine_steps),
                                             lpips, std)
    ws["opt_w"], _ = invert.optimize(G, images, ws["mean_latent"], "w", p.evaluate.opt, lpips, std)
    if space == "w+":
        ws["opt_wplus"], _ = invert.optimize(G, images, ws["mean_latent"], "w+", p.evaluate.opt, lpips, std)
    report_ws, report_curves = [], {}
    with torch.no_grad():
        emb = encoder.encode_image(images)
    for i, name in enumerate(names):  # the report's experiment: one fresh bridge per photo
        torch.manual_seed(cfg.seed)
        rb = build_bridge(G, emb.shape[1], dataclasses.replace(p.train, target="z"), torch.zeros(1, 1, G.z_dim))
        rb = rb.to(p.device)
        report_curves[name] = train_on_one_photo(G, rb, emb[i:i + 1], images[i:i + 1], cfg.report_steps, cfg.report_lr)
        with torch.no_grad():
            report_ws.append(invert.bridge_ws(G, encoder, rb, images[i:i + 1]))
    ws["report_one_photo"] = torch.cat(report_ws)
    recon = {k: synthesize(G, w, batch=len(names)) for k, w in ws.items()}
    scores = {k: scorer(v) for k, v in recon.items()}
    write_json(paths.RESULTS / "photos" / generator / "metrics.json", finite({
        "generator": generator, "photos": names, "zoom": zoom, "framing_faces_found": n_found,
        "lpips_variant": metric.label, "lpips_loss": lpips.label, "w_label": "z" if space_is_z else "W",
        "report_lr": cfg.report_lr, "report_steps": cfg.report_steps,
        "methods": {k: {n: {m: r[m] for m in ("psnr", "lpips", "ssim")} for n, r in zip(names, rows)}
                    for k, rows in scores.items()},
        "report_rgb_before": {n: c[0]["rgb"] for n, c in report_curves.items()},
        "report_rgb_after": {n: c[-1]["rgb"] for n, c in report_curves.items()},
    }))
    figures.setup_style()
    labels = {"input": "photo (aligned)", "report_one_photo": "report (1 photo)"}
    figures.image_grid({labels.get(k) or figures.method_label(k, "z" if space_is_z else "W"): v.cpu()
                        for k, v in {"input": images, **recon}.items()},
                       paths.FIGURES / f"photos_{generator}.pdf", len(names), f"real photos, {generator} generator")


if __name__ == "__main__":
    run(main)
