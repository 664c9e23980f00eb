"""One whole Zero-1-to-3 run, as Lab 5 makes it, with any setting of the recipe changed: prints one JSON line per
measurement and writes them all to --out.

    python scripts/zero123/recipe.py --profile cpu                         # the lab's cpu recipe
    python scripts/zero123/recipe.py --profile cpu --weighting epsilon     # ... with latent diffusion's plain loss
    python scripts/zero123/recipe.py --profile cpu --steps 4000 --eval-every 1000 --no-regression
    python scripts/zero123/recipe.py --profile cpu --samples 4 --save run.pt   # ... then --load run.pt --scales 1,5

Steps: render (or read) the views; train the autoencoder; encode every view; train the pose-conditioned diffusion
model (unless --no-diffusion) and, unless --no-regression, the regression baseline of the same size for the same
number of steps; generate the held-out objects' novel views with guided DDIM at each of --scales (one sample per
pair, and with --samples n also the mean of n samples, the decoded mean of their latents, and how one sample's error
splits into the posterior mean's and the samples' spread); score everything against the three untrained baselines
(copy the input view, the mean training view, all background) with helpers.zero123.metrics, and report each
method's paired gaps over them (mean ± standard error over the objects). --eval-every N scores the diffusion model
(the first of --scales) and the regression every N steps on the first 100 pairs. --save keeps the trained networks;
--load reuses those it holds (the autoencoder, the diffusion model, the regression) and trains the others.
Every evaluation row also gives the colour errors (helpers.zero123.metrics.colour_errors: the background's tint, the
object's chroma against the truth's), and each scale has a row for the denoiser's own estimate of the view at the
first DDIM step (runs.first_step_estimate: with guidance 1 the conditional mean that the regression learns).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/zero123/recipe.py` from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from helpers.common.loop import History  # noqa: E402
from helpers.profile import get_device, seed_everything, set_threads  # noqa: E402
from helpers.zero123 import metrics, runs, views  # noqa: E402
from helpers.zero123.autoencoder import latent_scale_factor  # noqa: E402
from helpers.zero123.model import LOSS_WEIGHTINGS, loss_weights  # noqa: E402
from helpers.zero123.scheduler import DDIM, ZERO123_DDIM  # noqa: E402

EVAL_PAIRS = 100  # pairs scored during training (--eval-every)


def _tuple(text: str, kind=int) -> tuple:
    return tuple(kind(v) for v in text.split(","))


def posterior_decomposition(draws: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Dataset-level PSNR (dB, pixels in [0, 1]) of one sample, of the mean of the n samples (n, K, 3, S, S), of the
    posterior mean they estimate (the mean's error less the spread's share, spread/n), and of an ideal sampler with
    that posterior mean: for a sample s of the true posterior, E|s − x|² = 2 E|μ − x|², 3 dB below μ."""
    n = len(draws)
    single = ((draws - truth) ** 2).mean().item() / 4
    mean = ((draws.mean(0) - truth) ** 2).mean().item() / 4
    spread = draws.var(dim=0, unbiased=True).mean().item() / 4
    posterior = mean - spread / n
    return {f"PSNR, {k}": round(10 * math.log10(1 / v), 2) for k, v in (
        ("one sample", single), (f"mean of {n}", mean), ("posterior mean (n → ∞)", posterior),
        ("ideal sampler", 2 * posterior))}


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, runs.Recipe]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", choices=sorted(runs.RECIPES))
    parser.add_argument("--scales", default="1,3", help="guidance scales to sample with, comma-separated")
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--no-regression", action="store_true")
    parser.add_argument("--no-diffusion", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads (default: the profile's, as in the lab)")
    parser.add_argument("--out", type=Path, help="write every measurement to this JSON file")
    parser.add_argument("--save", type=Path, help="save the trained networks (state dicts) and the scale here")
    parser.add_argument("--load", type=Path, help="use the networks --save wrote (same sizes) instead of training them")
    parser.add_argument("--samples", type=int, default=1, help="also score the average of this many samples per pair")
    for field in dataclasses.fields(runs.Recipe):
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name,
                            choices=LOSS_WEIGHTINGS if field.name == "weighting" else None)
    args = parser.parse_args(argv)
    base = runs.RECIPES[args.profile]
    changes = {}
    for field in dataclasses.fields(runs.Recipe):
        value = getattr(args, field.name)
        if value is None:
            continue
        default = getattr(base, field.name)
        if isinstance(default, tuple):
            changes[field.name] = _tuple(value, bool if isinstance(default[0], bool) else int)
        else:
            changes[field.name] = type(default)(value)
    return args, base.replace(**changes)


def main(argv: list[str] | None = None) -> None:
    args, recipe = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        set_threads(args.profile)
    device = get_device(args.profile)
    results: list[dict] = []
    start = time.perf_counter()

    def report(**row: object) -> None:
        row["minutes"] = round((time.perf_counter() - start) / 60, 2)
        results.append(row)
        print(json.dumps(row), flush=True)

    report(recipe=dataclasses.asdict(recipe), device=str(device))
    sizes = views.PROFILE_SIZES[args.profile]
    train = runs.view_tensors(views.load("train", recipe.train_objects, recipe.image_size))
    test = runs.view_tensors(views.load("test", sizes["test"][0], recipe.image_size))
    pairs = runs.evaluation_pairs(test, recipe.pairs_per_object, seed=args.seed)
    report(step="data", train_objects=len(train), test_pairs=len(pairs.objects))

    seed_everything(args.seed)
    autoencoder = runs.build_autoencoder(recipe).to(device)
    saved = torch.load(args.load) if args.load else {}
    if "autoencoder" in saved:
        autoencoder.load_state_dict(saved["autoencoder"])
        history = History()
    else:
        history = runs.train_autoencoder(autoencoder, train.images.flatten(0, 1), steps=recipe.autoencoder_steps,
                                         lr=recipe.autoencoder_lr, batch_size=recipe.batch_size,
                                         kl_weight=recipe.kl_weight, chroma_weight=recipe.chroma_weight,
                                         generator=torch.Generator().manual_seed(args.seed), progress=False)
    train_latents = runs.encode_views(autoencoder, train.images)
    test_latents = runs.encode_views(autoencoder, test.images)
    scale = 1.0 / train_latents.std().item()

    def scored(images: torch.Tensor) -> dict[str, float]:
        """The scores and the colour errors of views (K, 3, S, S) against the pairs' true views, rounded."""
        row = {**runs.score_table({"": images}, pairs)[""], **metrics.colour_errors(images, pairs.truth, pairs.masks)}
        return {k: round(v, 3) for k, v in row.items()}

    reconstructions = runs.decode_latents(autoencoder, test_latents[pairs.objects, pairs.target] * scale, scale)
    report(step="autoencoder", seconds=round(history.seconds, 1), scale=round(scale, 4),
           sampled_scale=round(latent_scale_factor(autoencoder, train.images[:64, 0].to(device)), 4),
           **{f"reconstruction {k}": v for k, v in scored(reconstructions).items()})
    fixed = runs.baselines(pairs, train)
    for name, images in fixed.items():
        report(step="baseline", method=name, **scored(images))
    baseline_scores = runs.per_image_table(fixed, pairs)

    def gaps(name: str, views: torch.Tensor) -> None:
        """Paired gaps (mean ± standard error) of ``views`` over each untrained baseline."""
        per_image = {**baseline_scores, **runs.per_image_table({name: views}, pairs)}
        for other, row in runs.paired_gaps(per_image, name, list(fixed), groups=pairs.objects).items():
            report(step="gap", method=name, over=other,
                   **{k: f"{m:+.3f} ± {se:.3f}" for k, (m, se) in row.items()})

    scheduler = DDIM(**ZERO123_DDIM)
    weights = loss_weights(scheduler, recipe.weighting)
    latent_size = train_latents.shape[-1]
    scales = _tuple(args.scales, float)
    probe = runs.Pairs(*(getattr(pairs, f.name)[:EVAL_PAIRS] for f in dataclasses.fields(runs.Pairs)))

    def evaluator(model, kind):
        def evaluate() -> float:
            if kind == "diffusion":
                out = runs.generate(model, autoencoder, scheduler, scale, probe, test_latents,
                                    steps=recipe.ddim_steps, guidance=scales[0], eta=recipe.eta, seed=args.seed)
            else:
                out = runs.regression_views(model, autoencoder, scale, probe, test_latents)
            row = runs.score_table({kind: out}, probe)[kind]
            report(step=f"{kind} during training", **{k: round(v, 3) for k, v in row.items()})
            model.train()
            return row["PSNR"]
        return evaluate if args.eval_every else None

    trained: dict[str, dict] = {}
    for kind in (() if args.no_diffusion else ("diffusion",)) + (() if args.no_regression else ("regression",)):
        seed_everything(args.seed + 1)  # both models start from the same weights
        model = runs.build_zero123(recipe, latent_size).to(device)
        generator = torch.Generator().manual_seed(args.seed + 2)  # and see the same pairs
        during = dict(evaluate=evaluator(model, kind), eval_every=args.eval_every)
        if kind in saved:
            model.load_state_dict(saved[kind])
            history = History()
        elif kind == "diffusion":
            history = runs.train_zero123(model, scheduler, train, train_latents, scale, steps=recipe.steps,
                                         lr=recipe.lr, batch_size=recipe.batch_size, weights=weights,
                                         generator=generator, progress=False, **during)
        else:
            history = runs.train_regression(model, train, train_latents, scale, steps=recipe.steps, lr=recipe.lr,
                                            batch_size=recipe.batch_size, generator=generator, progress=False,
                                            **during)
        if history.losses:
            report(step=f"{kind} trained", seconds=round(history.seconds, 1),
                   loss_first=round(sum(history.losses[:50]) / 50, 4),
                   loss_last=round(sum(history.losses[-50:]) / 50, 4))
        if kind == "diffusion":
            for s in sorted({1.0, *scales}):
                out = runs.generate(model, autoencoder, scheduler, scale, pairs, test_latents, steps=recipe.ddim_steps,
                                    guidance=s, seed=args.seed, sampler=runs.first_step_estimate)
                report(step="evaluation", method=f"diffusion's first-step estimate, guidance {s:g}", **scored(out))
                gaps(f"first-step estimate, guidance {s:g}", out)
            for s in scales:
                t0 = time.perf_counter()  # the draws that runs.posterior_means(samples=n) summarises
                drawn = torch.stack(list(runs.draw_latents(model, scheduler, scale, pairs, test_latents,
                                                           steps=recipe.ddim_steps, guidance=s, eta=recipe.eta,
                                                           seed=args.seed, samples=args.samples)))
                draws = torch.stack([runs.decode_latents(autoencoder, z, scale) for z in drawn])
                seconds = round((time.perf_counter() - t0) / args.samples, 1)
                report(step="evaluation", method=f"diffusion, guidance {s:g}", seconds=seconds, **scored(draws[0]))
                gaps(f"diffusion, guidance {s:g}", draws[0])
                if args.samples > 1:
                    name = f"diffusion, guidance {s:g}, mean of {args.samples} samples"
                    mean = draws.mean(0)
                    report(step="evaluation", method=name, **scored(mean))
                    gaps(name, mean)
                    name = f"diffusion, guidance {s:g}, decoded mean latent of {args.samples} samples"
                    decoded = runs.decode_latents(autoencoder, drawn.mean(0), scale)
                    report(step="evaluation", method=name, **scored(decoded))
                    gaps(name, decoded)
                    report(step="spread", method=f"diffusion, guidance {s:g}",
                           **posterior_decomposition(draws, pairs.truth))
        else:
            out = runs.regression_views(model, autoencoder, scale, pairs, test_latents)
            report(step="evaluation", method="regression", **scored(out))
            gaps("regression", out)
        trained[kind] = model.state_dict()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.save:
        torch.save(dict(trained, autoencoder=autoencoder.state_dict(), scale=scale,
                        recipe=dataclasses.asdict(recipe)), args.save)


if __name__ == "__main__":
    main()
