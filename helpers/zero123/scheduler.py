"""Diffusion schedulers written from scratch: the forward noising, DDPM's and DDIM's reverse steps, guidance.

Symbols follow Ho et al. (2020) and Song et al. (2021): T training steps, β_t the noise added at step t,
α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s (``alphas_cumprod``), x_0 the clean sample, x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε the
noised one, ε ~ N(0, I) the noise the denoiser ε_θ(x_t, t) predicts, η DDIM's stochasticity (0: deterministic,
1: DDPM's variance). Timesteps count from 0 (the cleanest) to T − 1, as in ``diffusers``.

:class:`DDPM` and :class:`DDIM` equal ``diffusers``' ``DDPMScheduler`` and ``DDIMScheduler`` exactly (the same
float32 operations in the same order) for ε-prediction with the ``linear`` or ``scaled_linear`` β schedule:
:func:`scheduler_from_diffusers` and :func:`scheduler_to_diffusers` move a configuration between the two. Zero-1-to-3
(and Stable Diffusion, whose weights it starts from) trains with T = 1000, β from 0.00085 to 0.012 spaced linearly in
√β ("scaled_linear"; latent diffusion's code calls it "linear"), and samples with DDIM on "leading" timesteps offset
by one, the last step going to ᾱ_0 rather than to 1 (:data:`ZERO123`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import diffusers

BETA_SCHEDULES = ("linear", "scaled_linear")
SPACINGS = ("leading", "linspace", "trailing")

# Zero-1-to-3's settings (its configs/sd-objaverse-finetune-c_concat-256.yaml and DDIM sampler).
ZERO123: dict[str, Any] = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                               beta_schedule="scaled_linear", timestep_spacing="leading", clip_sample=False)
ZERO123_DDIM: dict[str, Any] = dict(ZERO123, steps_offset=1, set_alpha_to_one=False)


def make_betas(num_train_timesteps: int, beta_start: float, beta_end: float, schedule: str) -> torch.Tensor:
    """β_1 … β_T (float32, shape (T,)): spaced linearly (``linear``, DDPM) or linearly in √β (``scaled_linear``)."""
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {schedule!r}")


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) noise shaped like ``x``, drawn on the generator's device and moved to ``x``'s (as diffusers does)."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


class NoiseSchedule:
    """The forward process and the choice of sampling timesteps, shared by :class:`DDPM` and :class:`DDIM`.

    ``timesteps`` (int64, descending) are the steps a sampler visits after :meth:`set_timesteps`: "leading" takes
    every (T // n)-th step from 0 and adds ``steps_offset``; "linspace" spreads n steps over [0, T − 1];
    "trailing" counts back from T − 1.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 beta_schedule: str = "scaled_linear", timestep_spacing: str = "leading", steps_offset: int = 0,
                 clip_sample: bool = False, clip_sample_range: float = 1.0) -> None:
        if timestep_spacing not in SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {SPACINGS}, got {timestep_spacing!r}")
        self.num_train_timesteps = num_train_timesteps  # T
        self.beta_start, self.beta_end, self.beta_schedule = beta_start, beta_end, beta_schedule
        self.timestep_spacing, self.steps_offset = timestep_spacing, steps_offset
        self.clip_sample, self.clip_sample_range = clip_sample, clip_sample_range
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule)  # β_t
        self.alphas = 1.0 - self.betas  # α_t
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # ᾱ_t
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.int64)

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose the n timesteps a sampler visits, from the noisiest to the cleanest."""
        T, n = self.num_train_timesteps, num_inference_steps
        if not 1 <= n <= T:
            raise ValueError(f"num_inference_steps must be between 1 and T={T}, got {n}")
        if self.timestep_spacing == "leading":
            steps = torch.arange(n, dtype=torch.int64).flip(0) * (T // n) + self.steps_offset
        elif self.timestep_spacing == "linspace":
            steps = torch.linspace(0, T - 1, n, dtype=torch.float64).round().flip(0).to(torch.int64)
        else:  # trailing
            steps = (torch.arange(T, 0, -T / n, dtype=torch.float64).round() - 1).to(torch.int64)
        self.num_inference_steps, self.timesteps = n, steps

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The forward process q(x_t | x_0): x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε. x0, noise: (B, ...); t: (B,) int."""
        alpha_bar = self.alphas_cumprod.to(device=x0.device, dtype=x0.dtype)[t.to(x0.device)].flatten()
        alpha_bar = alpha_bar.reshape(-1, *([1] * (x0.dim() - 1)))
        return alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * noise

    def predict_x0(self, noise_prediction: torch.Tensor, t: int, sample: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ) / √ᾱ_t, the clean sample the predicted noise implies (clipped if asked)."""
        alpha_bar = self.alphas_cumprod[t]
        x0 = (sample - (1 - alpha_bar) ** 0.5 * noise_prediction) / alpha_bar**0.5
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(T={self.num_train_timesteps}, β {self.beta_start}–{self.beta_end} "
                f"{self.beta_schedule}, {self.timestep_spacing} + {self.steps_offset}, "
                f"n={self.num_inference_steps})")


class DDPM(NoiseSchedule):
    """Ho et al.'s ancestral sampler: x_{t'} ~ q(x_{t'} | x_t, x̂_0), with t' the previous visited timestep.

    With every step visited, α_t and β_t are the schedule's; with a stride, the step from t to t' uses the
    effective α = ᾱ_t / ᾱ_{t'} and β = 1 − α. The variance is the posterior's, σ² = (1 − ᾱ_{t'}) / (1 − ᾱ_t) · β.
    """

    def previous_timestep(self, t: int) -> int:
        """t' the step after t in ``timesteps`` (−1 after the last), or t − 1 before :meth:`set_timesteps`."""
        if self.num_inference_steps is None:
            return int(t) - 1
        index = int((self.timesteps == t).nonzero()[0, 0])
        return int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else -1

    def step(self, noise_prediction: torch.Tensor, t: int, sample: torch.Tensor, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t → x_{t'}: the posterior mean μ̃ = √ᾱ_{t'} β / (1 − ᾱ_t) · x̂_0 + √α (1 − ᾱ_{t'}) / (1 − ᾱ_t) · x_t,
        plus σ z with z = ``noise`` (or drawn from ``generator``) unless t = 0. Shapes: (B, C, H, W) in and out."""
        t = int(t)
        t_prev = self.previous_timestep(t)
        alpha_bar = self.alphas_cumprod[t]
        alpha_bar_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
        alpha = alpha_bar / alpha_bar_prev
        beta = 1 - alpha
        x0 = self.predict_x0(noise_prediction, t, sample)
        mean = (alpha_bar_prev**0.5 * beta) / (1 - alpha_bar) * x0 + alpha**0.5 * (1 - alpha_bar_prev) / (
            1 - alpha_bar) * sample
        if t == 0:
            return mean
        variance = torch.clamp((1 - alpha_bar_prev) / (1 - alpha_bar) * beta, min=1e-20)
        z = noise if noise is not None else _randn_like(noise_prediction, generator)
        return mean + variance**0.5 * z


class DDIM(NoiseSchedule):
    """Song et al.'s sampler: from t to t' = t − T // n, x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ²) ε_θ + σ z with
    σ = η √((1 − ᾱ_{t'}) / (1 − ᾱ_t) · (1 − ᾱ_t / ᾱ_{t'})). η = 0 is deterministic; η = 1 has DDPM's variance.
    Past the last step ᾱ_{t'} is 1 (``set_alpha_to_one``) or ᾱ_0 (Stable Diffusion's and Zero-1-to-3's choice)."""

    def __init__(self, *args: Any, set_alpha_to_one: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_alpha_to_one = set_alpha_to_one
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]

    def step(self, noise_prediction: torch.Tensor, t: int, sample: torch.Tensor, eta: float = 0.0,
             noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t → x_{t'} (DDIM's update; ``noise`` z, or drawn from ``generator``, is used only when η > 0)."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps(n) before step: DDIM's stride T // n depends on n")
        t = int(t)
        t_prev = t - self.num_train_timesteps // self.num_inference_steps
        alpha_bar = self.alphas_cumprod[t]
        alpha_bar_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else self.final_alpha_cumprod
        x0 = self.predict_x0(noise_prediction, t, sample)
        variance = ((1 - alpha_bar_prev) / (1 - alpha_bar)) * (1 - alpha_bar / alpha_bar_prev)
        sigma = eta * variance**0.5
        x_prev = alpha_bar_prev**0.5 * x0 + (1 - alpha_bar_prev - sigma**2) ** 0.5 * noise_prediction
        if eta > 0:
            z = noise if noise is not None else _randn_like(noise_prediction, generator)
            x_prev = x_prev + sigma * z
        return x_prev


def classifier_free_guidance(noise_unconditional: torch.Tensor, noise_conditional: torch.Tensor,
                             scale: float) -> torch.Tensor:
    """Ho & Salimans (2021): ε̃ = ε_θ(x_t, ∅) + s (ε_θ(x_t, c) − ε_θ(x_t, ∅)). s = 1 is the conditional model;
    s > 1 pushes the sample further from what the unconditional model expects."""
    if noise_unconditional.shape != noise_conditional.shape:
        raise ValueError(f"the two noise predictions must have one shape, got {tuple(noise_unconditional.shape)} "
                         f"and {tuple(noise_conditional.shape)}")
    return noise_unconditional + scale * (noise_conditional - noise_unconditional)


@torch.no_grad()
def sample(denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scheduler: NoiseSchedule,
           x_T: torch.Tensor, num_inference_steps: int, eta: float = 0.0,
           generator: torch.Generator | None = None, progress: Callable | None = None) -> torch.Tensor:
    """Run the reverse process from x_T: for each t in ``timesteps``, x ← step(ε_θ(x, t), t, x).

    ``denoiser(x, t)`` returns ε_θ (apply guidance inside it). Noise is drawn from ``generator`` in the order that
    ``diffusers``' pipelines draw it, so the same generator gives the same samples there. ``progress`` wraps the
    timesteps (e.g. ``tqdm``).
    """
    scheduler.set_timesteps(num_inference_steps)
    x = x_T
    steps = scheduler.timesteps if progress is None else progress(scheduler.timesteps)
    for t in steps:
        eps = denoiser(x, t)
        if isinstance(scheduler, DDIM):
            x = scheduler.step(eps, t, x, eta=eta, generator=generator)
        else:
            x = scheduler.step(eps, t, x, generator=generator)
    return x


# ----------------------------------------------------------------------------------------------------------------
# diffusers


def _check_config(config: Any, expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        got = config.get(key, value)
        if got != value:
            raise ValueError(f"the course's scheduler supports {key}={value!r} only, got {got!r}")


def scheduler_from_diffusers(scheduler: Any) -> DDPM | DDIM:
    """The course's :class:`DDPM` or :class:`DDIM` with the configuration of a ``diffusers`` ``DDPMScheduler`` or
    ``DDIMScheduler`` (ε-prediction, ``linear`` or ``scaled_linear`` β, no thresholding)."""
    name = type(scheduler).__name__
    if name not in ("DDPMScheduler", "DDIMScheduler"):
        raise TypeError(f"expected a diffusers DDPMScheduler or DDIMScheduler, got {name}")
    config = scheduler.config
    _check_config(config, dict(prediction_type="epsilon", thresholding=False, trained_betas=None,
                               rescale_betas_zero_snr=False))
    if name == "DDPMScheduler":
        _check_config(config, dict(variance_type="fixed_small"))
    kwargs = {key: config[key] for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                                           "timestep_spacing", "steps_offset", "clip_sample", "clip_sample_range")}
    if name == "DDIMScheduler":
        course: DDPM | DDIM = DDIM(**kwargs, set_alpha_to_one=config["set_alpha_to_one"])
    else:
        course = DDPM(**kwargs)
    if scheduler.num_inference_steps is not None:
        course.set_timesteps(scheduler.num_inference_steps)
    return course


def scheduler_to_diffusers(scheduler: DDPM | DDIM) -> diffusers.DDPMScheduler | diffusers.DDIMScheduler:
    """The ``diffusers`` scheduler with the same configuration (a new object; timesteps are not copied)."""
    import diffusers

    kwargs = dict(num_train_timesteps=scheduler.num_train_timesteps, beta_start=scheduler.beta_start,
                  beta_end=scheduler.beta_end, beta_schedule=scheduler.beta_schedule, prediction_type="epsilon",
                  timestep_spacing=scheduler.timestep_spacing, steps_offset=scheduler.steps_offset,
                  clip_sample=scheduler.clip_sample, clip_sample_range=scheduler.clip_sample_range)
    if isinstance(scheduler, DDIM):
        return diffusers.DDIMScheduler(**kwargs, set_alpha_to_one=scheduler.set_alpha_to_one)
    return diffusers.DDPMScheduler(**kwargs, variance_type="fixed_small")
