"""helpers.zero123.scheduler is diffusers' DDPMScheduler and DDIMScheduler: the same timesteps and the same samples
(difference exactly 0.0) on configurations chosen at random, and Zero-1-to-3's own settings."""

from __future__ import annotations

import random

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from helpers.zero123.scheduler import (
    DDIM,
    DDPM,
    ZERO123,
    ZERO123_DDIM,
    classifier_free_guidance,
    sample,
    scheduler_from_diffusers,
    scheduler_to_diffusers,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)


def random_configs(n: int, seed: int) -> list[dict]:
    """Training steps, inference steps, β schedule and range, spacing, offset, clipping, η: drawn at random."""
    rng = random.Random(seed)
    configs = []
    for _ in range(n):
        T = rng.choice([50, 100, 337, 1000])
        configs.append(dict(
            num_train_timesteps=T, n=rng.choice([1, 3, 7, 10, 25, min(50, T)]),
            beta_schedule=rng.choice(["linear", "scaled_linear"]), beta_start=rng.choice([1e-4, 0.00085, 0.002]),
            beta_end=rng.choice([0.012, 0.02, 0.03]), timestep_spacing=rng.choice(["leading", "linspace", "trailing"]),
            steps_offset=rng.choice([0, 1]), clip_sample=rng.choice([False, True]),
            eta=rng.choice([0.0, 0.3, 1.0]), set_alpha_to_one=rng.choice([False, True])))
    return configs


CONFIGS = [dict(ZERO123_DDIM, n=50, eta=0.0), dict(ZERO123_DDIM, n=20, eta=1.0)] + random_configs(8, seed=14)


def _split(config: dict) -> tuple[dict, int, float, bool]:
    c = dict(config)
    return c, c.pop("n"), c.pop("eta"), c.pop("set_alpha_to_one")


def _run_both(ours, ref, step_ours, step_ref, n: int, seed: int) -> None:
    """Walk a trajectory with the same random 'model outputs' and noise; every step must agree exactly."""
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    assert torch.equal(ours.timesteps, ref.timesteps), (ours.timesteps, ref.timesteps)
    gen = torch.Generator().manual_seed(seed)
    x_ours = x_ref = torch.randn(2, 3, 5, 4, generator=gen)
    for t in ref.timesteps:
        eps = torch.randn(x_ref.shape, generator=gen)
        noise = torch.randn(x_ref.shape, generator=gen)
        x_ours, x_ref = step_ours(eps, t, x_ours, noise), step_ref(eps, t, x_ref, noise)
        assert torch.equal(x_ours, x_ref), f"t={int(t)}: differs by {(x_ours - x_ref).abs().max():.3g}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"T{c['num_train_timesteps']}-n{c['n']}-"
                         f"{c['beta_schedule']}-{c['timestep_spacing']}+{c['steps_offset']}-eta{c['eta']}")
def test_ddim_equals_diffusers_step_for_step(config):
    kwargs, n, eta, alpha_to_one = _split(config)
    ref = DDIMScheduler(**kwargs, set_alpha_to_one=alpha_to_one, prediction_type="epsilon")
    ours = scheduler_from_diffusers(ref)
    assert isinstance(ours, DDIM) and ours.set_alpha_to_one == alpha_to_one
    _run_both(ours, ref, lambda e, t, x, z: ours.step(e, t, x, eta=eta, noise=z),
              lambda e, t, x, z: ref.step(e, t, x, eta=eta, variance_noise=z).prev_sample, n, seed=n)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"T{c['num_train_timesteps']}-n{c['n']}-"
                         f"{c['beta_schedule']}-{c['timestep_spacing']}+{c['steps_offset']}")
def test_ddpm_equals_diffusers_step_for_step(config):
    kwargs, n, _, _ = _split(config)
    kwargs.pop("set_alpha_to_one", None)
    ref = DDPMScheduler(**kwargs)
    ours = scheduler_from_diffusers(ref)
    assert isinstance(ours, DDPM)

    def step_ref(eps, t, x, noise):  # diffusers' DDPM draws its noise from a generator (only when t > 0)
        gen = torch.Generator().manual_seed(int(t))
        return ref.step(eps, t, x, generator=gen).prev_sample

    def step_ours(eps, t, x, noise):
        return ours.step(eps, t, x, noise=torch.randn(x.shape, generator=torch.Generator().manual_seed(int(t))))

    _run_both(ours, ref, step_ours, step_ref, n, seed=n)


def test_ddpm_without_set_timesteps_walks_every_step():
    ref, ours = DDPMScheduler(**dict(ZERO123, num_train_timesteps=30)), DDPM(**dict(ZERO123, num_train_timesteps=30))
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 2, 3, 3, generator=gen), torch.randn(1, 2, 3, 3, generator=gen)
    for t in (29, 5, 1, 0):
        want = ref.step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
        got = ours.step(eps, t, x, noise=torch.randn(x.shape, generator=torch.Generator().manual_seed(7)))
        assert torch.equal(got, want)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear"])
def test_add_noise_and_schedule_equal_diffusers(schedule):
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule=schedule)
    ours = scheduler_from_diffusers(ref)
    assert torch.equal(ours.betas, ref.betas) and torch.equal(ours.alphas_cumprod, ref.alphas_cumprod)
    gen = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(6, 4, 8, 8, generator=gen), torch.randn(6, 4, 8, 8, generator=gen)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    assert torch.equal(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t))


def test_zero123_settings():
    """Zero-1-to-3's schedule: ᾱ_T is small (the last step is almost pure noise), DDIM ends on timestep 1."""
    ddim = DDIM(**ZERO123_DDIM)
    ddim.set_timesteps(50)
    assert ddim.timesteps[0] == 981 and ddim.timesteps[-1] == 1
    assert ddim.alphas_cumprod[-1] == pytest.approx(0.0047, abs=1e-4)
    assert ddim.final_alpha_cumprod == ddim.alphas_cumprod[0]
    ref = scheduler_to_diffusers(ddim)
    assert isinstance(ref, DDIMScheduler) and ref.config.steps_offset == 1 and not ref.config.set_alpha_to_one
    assert isinstance(scheduler_to_diffusers(DDPM(**ZERO123)), DDPMScheduler)


@pytest.mark.parametrize("kind", ["ddim-eta0", "ddim-eta1", "ddpm"])
def test_sample_draws_noise_as_diffusers_pipelines_do(kind):
    """The course's loop and diffusers' loop with one generator seed give the same samples."""
    cls, eta = (DDPMScheduler, 0.0) if kind == "ddpm" else (DDIMScheduler, float(kind[-1]))
    extra = {} if kind == "ddpm" else {"steps_offset": 1, "set_alpha_to_one": False}
    ref = cls(**ZERO123, **extra)
    ours = scheduler_from_diffusers(ref)
    weight = torch.randn(3, 3, generator=torch.Generator().manual_seed(3))

    def denoiser(x, t):  # any deterministic function of (x, t)
        return torch.tanh(torch.einsum("ij,bjhw->bihw", weight, x) * (1 + int(t) / 1000))

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 4, 4, generator=gen)
    ref.set_timesteps(10)
    for t in ref.timesteps:
        x = ref.step(denoiser(x, t), t, x, generator=gen, **({} if kind == "ddpm" else {"eta": eta})).prev_sample
    gen = torch.Generator().manual_seed(5)
    got = sample(denoiser, ours, torch.randn(2, 3, 4, 4, generator=gen), 10, eta=eta, generator=gen)
    assert torch.equal(got, x)


def test_classifier_free_guidance():
    gen = torch.Generator().manual_seed(0)
    u, c = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen)
    torch.testing.assert_close(classifier_free_guidance(u, c, 1.0), c)
    assert torch.equal(classifier_free_guidance(u, c, 0.0), u)
    torch.testing.assert_close(classifier_free_guidance(u, c, 3.0), c + 2.0 * (c - u))
    with pytest.raises(ValueError, match="one shape"):
        classifier_free_guidance(u, c[:1], 2.0)


def test_unsupported_configurations_are_refused():
    with pytest.raises(ValueError, match="prediction_type='epsilon'"):
        scheduler_from_diffusers(DDIMScheduler(prediction_type="v_prediction"))
    with pytest.raises(ValueError, match="beta_schedule must be one of"):
        DDPM(beta_schedule="squaredcos_cap_v2")
    with pytest.raises(TypeError, match="DDPMScheduler or DDIMScheduler"):
        scheduler_from_diffusers(object())
    with pytest.raises(ValueError, match="between 1 and T=1000"):
        DDIM().set_timesteps(0)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        DDIM().step(torch.zeros(1), 10, torch.zeros(1))
