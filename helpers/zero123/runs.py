"""Training, sampling and evaluating a small Zero-1-to-3: Lab 5's machinery, reusable from a script.

Liu et al., 2023, "Zero-1-to-3": §3.1–3.2 (a latent diffusion model conditioned on an input view x_c and the relative
camera pose π: pose-CLIP through cross-attention, the input view's latent concatenated to the noisy latent, condition
dropout for guidance), §4 (pairs of views rendered from 12 random cameras per object) and §5 (novel views of held-out
objects, PSNR and SSIM). Here the first stage is the course's KL autoencoder, trained first on the rendered views.

The functions take the parts that the lab grades as arguments (``loss_fn``, ``sampler``), with the course's own
copies as defaults: in the lab the student's training step and the student's sampling loop are the ones that run.

Shapes: N objects, V = 12 views, images (N, V, 3, S, S) in [-1, 1], masks (N, V, S, S) bool, cameras (N, V, 3)
(polar, azimuth, radius), latents (N, V, L, h, w) (the posterior means, unscaled); a batch of B pairs of views
(object, source view, target view) as three (B,) index tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from helpers.common.loop import History, optimiser_step, train_loop
from helpers.common.optim import adamw, autocast, cosine_lr
from helpers.common.stats import paired_difference
from helpers.profile import get_profile
from helpers.zero123 import metrics
from helpers.zero123.autoencoder import Autoencoder, AutoencoderConfig, autoencoder_loss
from helpers.zero123.camera import relative_pose
from helpers.zero123.conditioning import ImageEncoder
from helpers.zero123.model import Zero123, denoising_loss
from helpers.zero123.scheduler import DDIM, sample
from helpers.zero123.unet import UNet, UNetConfig

LossFn = Callable[..., torch.Tensor]
SamplerFn = Callable[..., torch.Tensor]
PairLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (z, x_c, z_c, π) → loss
REGRESSION_TIMESTEP = 999  # the step the regression baseline's UNet is told (any fixed step would do)


# ----------------------------------------------------------------------------------------------------------------
# Sizes


@dataclass(frozen=True)
class Recipe:
    """Every size and setting of a run; :data:`RECIPES` holds one per profile, the lab and the recipe script read it."""

    image_size: int = 32  # S
    train_objects: int = 900  # of helpers.zero123.views' train split
    pairs_per_object: int = 2  # evaluation pairs per held-out object
    autoencoder_channels: tuple[int, ...] = (16, 32, 64)  # f = 2^(levels − 1)
    autoencoder_steps: int = 600
    autoencoder_lr: float = 2e-3
    kl_weight: float = 1e-4
    chroma_weight: float = 4.0
    unet_channels: tuple[int, ...] = (32, 64)
    attention: tuple[bool, ...] = (True, False)
    heads: int = 4
    embed_dim: int = 64  # D: the image embedding and the context token
    encoder_channels: tuple[int, ...] = (16, 32, 64)  # the stand-in image encoder's convolutions
    steps: int = 1500  # diffusion steps, and the regression baseline's
    batch_size: int = 32
    lr: float = 1e-3
    weighting: str = "truncated-snr"  # helpers.zero123.model.loss_weights
    ddim_steps: int = 25
    guidance: float = 3.0
    eta: float = 0.0
    mean_of: int = 32  # samples averaged per pair for the estimate of the posterior mean view …
    mean_guidance: float = 1.0  # … drawn at this scale: 1 is the model's own posterior; guidance narrows, shifts it …
    mean_steps: int = 12  # … in this many DDIM steps each: their average scores as 25 steps' does, at half the cost

    def replace(self, **changes: object) -> Recipe:
        return dataclasses.replace(self, **changes)


RECIPES = {
    "smoke": Recipe(train_objects=60, pairs_per_object=2, autoencoder_channels=(8, 16, 32), autoencoder_steps=40,
                    unet_channels=(16, 32), embed_dim=32, encoder_channels=(8, 16, 32), steps=40, ddim_steps=10,
                    mean_of=2, mean_steps=5),
    "cpu": Recipe(),
    "gpu": Recipe(image_size=64, autoencoder_channels=(32, 64, 128, 128), autoencoder_steps=3000,
                  unet_channels=(64, 128, 128), attention=(True, True, False), heads=4, embed_dim=128,
                  encoder_channels=(32, 64, 128, 128), steps=8000, batch_size=64, ddim_steps=50,
                  mean_steps=25),
}


def recipe(profile: str | None = None) -> Recipe:
    """The run sizes of a profile (default: $COURSE_PROFILE, else by hardware)."""
    return RECIPES[get_profile(profile)]


def build_autoencoder(r: Recipe) -> Autoencoder:
    return Autoencoder(AutoencoderConfig(block_out_channels=r.autoencoder_channels, sample_size=r.image_size,
                                         norm_num_groups=min(8, r.autoencoder_channels[0])))


def build_zero123(r: Recipe, latent_size: int, latent_channels: int = 4) -> Zero123:
    """Image encoder, pose projection and 2L-channel UNet, sized by the recipe."""
    unet = UNet(UNetConfig(in_channels=2 * latent_channels, out_channels=latent_channels,
                           block_out_channels=r.unet_channels, cross_attention=r.attention, num_heads=r.heads,
                           norm_num_groups=min(8, r.unet_channels[0]), cross_attention_dim=r.embed_dim,
                           sample_size=latent_size))
    encoder = ImageEncoder(r.embed_dim, channels=r.encoder_channels, image_size=r.image_size,
                           groups=min(8, r.encoder_channels[0]))
    return Zero123(unet, encoder)


# ----------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class Views:
    """One split of :mod:`helpers.zero123.views` as tensors."""

    images: torch.Tensor  # (N, V, 3, S, S) float32 in [-1, 1]
    masks: torch.Tensor  # (N, V, S, S) bool
    cameras: torch.Tensor  # (N, V, 3) float64
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return self.images.shape[-1]


def view_tensors(data: dict[str, np.ndarray]) -> Views:
    """The arrays of :func:`helpers.zero123.views.load` → :class:`Views`."""
    images = data.get("images")
    if not (isinstance(images, np.ndarray) and images.ndim == 5 and images.shape[-1] == 3):
        raise ValueError(f"expected views with 'images' (N, V, S, S, 3) uint8, got {getattr(images, 'shape', None)}")
    return Views(torch.from_numpy(images).permute(0, 1, 4, 2, 3).float() / 127.5 - 1,
                 torch.from_numpy(data["masks"]), torch.from_numpy(data["cameras"]), [str(n) for n in data["names"]])


def random_pairs(objects: int, views: int, batch_size: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B pairs of two different views of one object: (object, source view, target view), each (B,) int64."""
    o = torch.randint(0, objects, (batch_size,), generator=generator)
    source = torch.randint(0, views, (batch_size,), generator=generator)
    target = (source + torch.randint(1, views, (batch_size,), generator=generator)) % views
    return o, source, target


def poses(cameras: torch.Tensor, o: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The relative poses (B, 4) from each pair's source camera to its target camera."""
    return relative_pose(cameras[o, source], cameras[o, target])


# ----------------------------------------------------------------------------------------------------------------
# The first stage


def train_autoencoder(model: Autoencoder, images: torch.Tensor, *, steps: int, lr: float, batch_size: int = 32,
                      kl_weight: float = 1e-4, chroma_weight: float = 0.0, warmup_steps: int | None = None,
                      generator: torch.Generator | None = None, progress: bool | str = True) -> History:
    """Train ``model`` on images (M, 3, S, S) in [-1, 1] with :func:`helpers.zero123.autoencoder.autoencoder_loss`:
    AdamW (no weight decay), a warm-up then a cosine decay to a tenth of ``lr``, gradients clipped to norm 1."""
    device = next(model.parameters()).device
    optimiser = adamw(model, lr, weight_decay=0.0)
    warmup = warmup_steps if warmup_steps is not None else max(1, steps // 20)
    model.train()

    def step(i: int, rate: float):
        batch = images[torch.randint(0, len(images), (batch_size,), generator=generator)].to(device)
        with autocast(device):
            loss, parts = autoencoder_loss(model, batch, kl_weight, generator=generator, chroma_weight=chroma_weight)
        return loss.detach(), optimiser_step(model, optimiser, loss, rate), parts

    history = train_loop(step, steps, lambda i: cosine_lr(i, lr, warmup, steps, lr / 10), progress=progress,
                         name="autoencoder")
    model.eval()
    return history


@torch.no_grad()
def encode_views(model: Autoencoder, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The posterior means z = μ(x) of images (..., 3, S, S) → (..., L, h, w), in batches, on the CPU."""
    device = next(model.parameters()).device
    flat = images.reshape(-1, *images.shape[-3:])
    parts = [model.encode(flat[i:i + batch_size].to(device)).mode().float().cpu()
             for i in range(0, len(flat), batch_size)]
    latents = torch.cat(parts)
    return latents.reshape(*images.shape[:-3], *latents.shape[1:])


@torch.no_grad()
def decode_latents(model: Autoencoder, latents: torch.Tensor, scale: float, batch_size: int = 256) -> torch.Tensor:
    """Images (B, 3, S, S) in [-1, 1] from scaled latents (B, L, h, w): D(z / s), clamped."""
    device = next(model.parameters()).device
    parts = [model.decode(latents[i:i + batch_size].to(device) / scale).clamp(-1, 1).float().cpu()
             for i in range(0, len(latents), batch_size)]
    return torch.cat(parts)


# ----------------------------------------------------------------------------------------------------------------
# The diffusion model and its regression twin


def _train_on_pairs(model: Zero123, pair_loss: PairLoss, views: Views, latents: torch.Tensor, scale: float, *,
                    steps: int, lr: float, batch_size: int, warmup_steps: int | None, weight_decay: float,
                    generator: torch.Generator | None, progress: bool | str, name: str,
                    evaluate: Callable[[], float] | None, eval_every: int) -> History:
    """The loop both models share: each step draws B pairs (object, source view, target view) and minimises
    ``pair_loss(target_latent, input_image, input_latent, pose)`` (latents scaled by ``scale``), with AdamW, a warm-up
    then a cosine decay to a tenth of ``lr``, gradients clipped to norm 1."""
    device = next(model.parameters()).device
    optimiser = adamw(model, lr, weight_decay=weight_decay)
    warmup = warmup_steps if warmup_steps is not None else max(1, steps // 20)
    model.train()

    def step(i: int, rate: float):
        o, source, target = random_pairs(len(views), views.images.shape[1], batch_size, generator)
        with autocast(device):
            loss = pair_loss((latents[o, target] * scale).to(device), views.images[o, source].to(device),
                             (latents[o, source] * scale).to(device),
                             poses(views.cameras, o, source, target).to(device))
        return loss.detach(), optimiser_step(model, optimiser, loss, rate)

    history = train_loop(step, steps, lambda i: cosine_lr(i, lr, warmup, steps, lr / 10), progress=progress,
                         name=name, evaluate=evaluate, eval_every=eval_every)
    model.eval()
    return history


def train_zero123(model: Zero123, scheduler: DDIM, views: Views, latents: torch.Tensor, scale: float, *, steps: int,
                  lr: float, batch_size: int = 32, weights: torch.Tensor | None = None,
                  loss_fn: LossFn = denoising_loss, warmup_steps: int | None = None, weight_decay: float = 0.01,
                  generator: torch.Generator | None = None, progress: bool | str = True,
                  evaluate: Callable[[], float] | None = None, eval_every: int = 0) -> History:
    """Train the pose-conditioned denoiser on random pairs of views: each step draws B pairs (object, source view,
    target view) and minimises ``loss_fn(model, scheduler, target_latent, input_image, input_latent, pose,
    generator=generator, weights=weights)`` (latents scaled by ``scale``, the input latent too), with AdamW, a warm-up
    then a cosine decay to a tenth of ``lr``, gradients clipped to norm 1 (``evaluate``, ``eval_every``: as in
    :func:`helpers.common.loop.train_loop`)."""
    def pair_loss(target_latent, input_image, input_latent, pose):
        return loss_fn(model, scheduler, target_latent, input_image, input_latent, pose, generator=generator,
                       weights=weights)

    return _train_on_pairs(model, pair_loss, views, latents, scale, steps=steps, lr=lr, batch_size=batch_size,
                           warmup_steps=warmup_steps, weight_decay=weight_decay, generator=generator,
                           progress=progress, name="Zero-1-to-3", evaluate=evaluate, eval_every=eval_every)


def regress(model: Zero123, input_image: torch.Tensor, input_latent: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """The regression baseline's prediction of the target latent (B, L, h, w): the same network, given an all-zero
    "noisy latent" and a fixed step, so that only the conditions (input view, its latent, pose) inform it."""
    context = model.context(input_image, pose)
    t = torch.full((len(input_latent),), REGRESSION_TIMESTEP, device=input_latent.device)
    return model(torch.zeros_like(input_latent), t, context, input_latent)


def train_regression(model: Zero123, views: Views, latents: torch.Tensor, scale: float, *, steps: int, lr: float,
                     batch_size: int = 32, warmup_steps: int | None = None, weight_decay: float = 0.01,
                     generator: torch.Generator | None = None, progress: bool | str = True,
                     evaluate: Callable[[], float] | None = None, eval_every: int = 0) -> History:
    """Train ``model`` as a deterministic regression (the fourth baseline): the same pairs, optimiser and schedule as
    :func:`train_zero123`, the loss ‖z − f(x_c, z_c, π)‖² on the scaled target latent (:func:`regress`)."""
    def pair_loss(target_latent, input_image, input_latent, pose):
        return F.mse_loss(regress(model, input_image, input_latent, pose).float(), target_latent)

    return _train_on_pairs(model, pair_loss, views, latents, scale, steps=steps, lr=lr, batch_size=batch_size,
                           warmup_steps=warmup_steps, weight_decay=weight_decay, generator=generator,
                           progress=progress, name="regression", evaluate=evaluate, eval_every=eval_every)


def course_sampler(model: Zero123, scheduler: DDIM, input_image: torch.Tensor, input_latent: torch.Tensor,
                   pose: torch.Tensor, *, steps: int, scale: float, eta: float = 0.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Guided DDIM from x_T ~ N(0, I) (drawn from ``generator`` first) to the scaled target latents (B, L, h, w)."""
    x = torch.randn(input_latent.shape, generator=generator,
                    device=generator.device if generator is not None else input_latent.device).to(input_latent.device)
    return sample(model.denoiser(input_image, input_latent, pose, scale=scale), scheduler, x, steps, eta=eta,
                  generator=generator)


def first_step_estimate(model: Zero123, scheduler: DDIM, input_image: torch.Tensor, input_latent: torch.Tensor,
                        pose: torch.Tensor, *, steps: int, scale: float, eta: float = 0.0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """The denoiser's own estimate of the target latent before any step is taken: x̂_0 = (x_T − √(1 − ᾱ_t) ε̃) / √ᾱ_t
    at the first of the ``steps`` DDIM timesteps, from the same x_T as :func:`course_sampler` (a drop-in
    ``sampler`` for :func:`generate`; ``eta`` is unused). With s = 1 it is the model's conditional mean E[z | x_c, π]
    as the noisiest step learnt it: the estimate the regression baseline is trained to make."""
    x = torch.randn(input_latent.shape, generator=generator,
                    device=generator.device if generator is not None else input_latent.device).to(input_latent.device)
    scheduler.set_timesteps(steps)
    t = int(scheduler.timesteps[0])
    noise = model.denoiser(input_image, input_latent, pose, scale=scale)(x, scheduler.timesteps[0])
    return scheduler.predict_x0(noise, t, x)


# ----------------------------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class Pairs:
    """Fixed evaluation pairs of one split: indices (K,) and what the methods are given and scored against."""

    objects: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    inputs: torch.Tensor  # (K, 3, S, S) the input views x_c
    truth: torch.Tensor  # (K, 3, S, S) the true target views
    masks: torch.Tensor  # (K, S, S) the target views' foreground
    poses: torch.Tensor  # (K, 4)


def evaluation_pairs(views: Views, per_object: int, seed: int = 0) -> Pairs:
    """``per_object`` random pairs of different views for every object of ``views`` (fixed by ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    V = views.images.shape[1]
    o = torch.arange(len(views)).repeat_interleave(per_object)
    source = torch.randint(0, V, (len(o),), generator=generator)
    target = (source + torch.randint(1, V, (len(o),), generator=generator)) % V
    return Pairs(o, source, target, views.images[o, source], views.images[o, target], views.masks[o, target],
                 poses(views.cameras, o, source, target))


@torch.no_grad()
def draw_latents(model: Zero123, scheduler: DDIM, scale: float, pairs: Pairs, latents: torch.Tensor, *, steps: int,
                 guidance: float, eta: float = 0.0, batch_size: int = 128, sampler: SamplerFn = course_sampler,
                 seed: int = 0, samples: int = 1) -> Iterator[torch.Tensor]:
    """The scaled target latents (K, L, h, w) of each of ``samples`` draws per pair, one draw after the other: draw j's
    batch b takes its noise from its own generator (``seed`` + 1000 · j + b)."""
    device = next(model.parameters()).device
    model.eval()
    for j in range(samples):
        out = []
        for b, i in enumerate(range(0, len(pairs.objects), batch_size)):
            part = slice(i, i + batch_size)
            input_latent = (latents[pairs.objects[part], pairs.source[part]] * scale).to(device)
            out.append(sampler(model, scheduler, pairs.inputs[part].to(device), input_latent,
                               pairs.poses[part].to(device), steps=steps, scale=guidance, eta=eta,
                               generator=torch.Generator().manual_seed(seed + 1000 * j + b)).float().cpu())
        yield torch.cat(out)


@torch.no_grad()
def generate(model: Zero123, autoencoder: Autoencoder, scheduler: DDIM, scale: float, pairs: Pairs,
             latents: torch.Tensor, *, steps: int, guidance: float, eta: float = 0.0, batch_size: int = 128,
             sampler: SamplerFn = course_sampler, seed: int = 0, samples: int = 1) -> torch.Tensor:
    """Novel views (K, 3, S, S) for the pairs: ``sampler`` (the guided DDIM loop) in batches, each batch's noise from
    its own generator (``seed`` + batch index), then decoded. ``latents`` (N, V, L, h, w) of the pairs' split.
    ``samples`` > 1 returns the average of that many decoded samples per pair (seeds ``seed`` + 1000 · j): a Monte
    Carlo estimate of the mean view the model expects, which is what PSNR rewards."""
    return posterior_means(model, autoencoder, scheduler, scale, pairs, latents, steps=steps, guidance=guidance,
                           eta=eta, batch_size=batch_size, sampler=sampler, seed=seed, samples=samples)["views"]


@torch.no_grad()
def posterior_means(model: Zero123, autoencoder: Autoencoder, scheduler: DDIM, scale: float, pairs: Pairs,
                    latents: torch.Tensor, *, steps: int, guidance: float, samples: int, eta: float = 0.0,
                    batch_size: int = 128, sampler: SamplerFn = course_sampler,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Two summaries (K, 3, S, S) of the same ``samples`` draws per pair (drawn as :func:`generate` draws them):

    - ``"views"``: the average of the decoded views, (1/n) Σ D(z_j): the estimate of E[x | x_c, π], the view with
      the least expected squared error (what PSNR rewards);
    - ``"latents"``: the decoded average latent, D((1/n) Σ z_j): the estimate of E[z | x_c, π] put through the
      decoder, which is what the regression baseline predicts (it is trained on latents), sharper than the first.
    """
    views, total = 0, 0
    for z in draw_latents(model, scheduler, scale, pairs, latents, steps=steps, guidance=guidance, eta=eta,
                    batch_size=batch_size, sampler=sampler, seed=seed, samples=samples):
        views = views + decode_latents(autoencoder, z, scale)
        total = total + z
    return {"views": views / samples, "latents": decode_latents(autoencoder, total / samples, scale)}


@torch.no_grad()
def regression_views(model: Zero123, autoencoder: Autoencoder, scale: float, pairs: Pairs, latents: torch.Tensor,
                     batch_size: int = 256) -> torch.Tensor:
    """The regression baseline's views (K, 3, S, S) for the pairs."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(pairs.objects), batch_size):
        part = slice(i, i + batch_size)
        z = regress(model, pairs.inputs[part].to(device),
                    (latents[pairs.objects[part], pairs.source[part]] * scale).to(device), pairs.poses[part].to(device))
        out.append(decode_latents(autoencoder, z.float(), scale))
    return torch.cat(out)


def baselines(pairs: Pairs, train: Views) -> dict[str, torch.Tensor]:
    """The three baselines that need no training, (K, 3, S, S) each: the input view itself, the mean of all training
    views, and an all-background (white) view."""
    mean_view = train.images.mean(dim=(0, 1))
    return {"copy the input view": pairs.inputs.clone(), "mean training view": mean_view.expand_as(pairs.truth).clone(),
            "all background": torch.ones_like(pairs.truth)}


def score_table(predictions: dict[str, torch.Tensor], pairs: Pairs) -> dict[str, dict[str, float]]:
    """Method → :func:`helpers.zero123.metrics.scores` against the pairs' true views."""
    return {name: metrics.scores(views, pairs.truth, pairs.masks) for name, views in predictions.items()}


def per_image_table(predictions: dict[str, torch.Tensor], pairs: Pairs) -> dict[str, dict[str, np.ndarray]]:
    """Method → :func:`helpers.zero123.metrics.per_image` (each pair's PSNR and SSIM, whole and on the box)."""
    return {name: metrics.per_image(views, pairs.truth, pairs.masks) for name, views in predictions.items()}


def paired_gaps(per_image: dict[str, dict[str, np.ndarray]], method: str, against: list[str],
                groups: torch.Tensor | np.ndarray | None = None) -> dict[str, dict[str, tuple[float, float]]]:
    """How far ``method`` is ahead of each method in ``against`` on the same pairs: baseline → metric → (mean gap,
    standard error) (:func:`helpers.common.stats.paired_difference`), for PSNR and SSIM, whole and on the box.
    ``groups``: each pair's object (``Pairs.objects``), so that the standard error counts objects, not pairs."""
    return {other: {name: paired_difference(per_image[method][name], per_image[other][name], groups)
                    for name in metrics.IMAGE_METRICS} for other in against}


@torch.no_grad()
def nearest_training_views(images: torch.Tensor, train: Views, batch_size: int = 256) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """For each image (K, 3, S, S), the training view closest in mean squared pixel error: its (object, view) index
    pair (K, 2) and the root-mean-square distance (K,) in [-1, 1] units."""
    flat = train.images.flatten(0, 1).flatten(1)  # (N·V, 3·S·S)
    best_d, best_i = [], []
    for i in range(0, len(images), batch_size):
        d = torch.cdist(images[i:i + batch_size].flatten(1), flat) / flat.shape[1] ** 0.5
        value, index = d.min(dim=1)
        best_d.append(value)
        best_i.append(index)
    index = torch.cat(best_i)
    V = train.images.shape[1]
    return torch.stack([index // V, index % V], dim=1), torch.cat(best_d)
