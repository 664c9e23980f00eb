import os

import pytest
import torch

from helpers.profile import (
    PROFILES,
    ProfileError,
    choose,
    describe,
    get_device,
    get_profile,
    seed_everything,
    set_threads,
)


@pytest.mark.parametrize("name", PROFILES)
def test_profile_from_environment(monkeypatch, name):
    monkeypatch.setenv("COURSE_PROFILE", name.upper())
    assert get_profile() == name


def test_profile_chosen_by_hardware_when_unset(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    assert get_profile() == ("gpu" if torch.cuda.is_available() else "cpu")


def test_wrong_profile_name_says_what_to_do(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "fast")
    with pytest.raises(ProfileError) as excinfo:
        get_profile()
    message = str(excinfo.value)
    assert "'fast'" in message and "smoke, cpu, gpu" in message and "COURSE_PROFILE" in message


def test_choose_and_device(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    assert choose(smoke=1, cpu=2, gpu=3) == 1
    assert choose(smoke=1, cpu=2, gpu=3, profile="gpu") == 3
    assert get_device().type == "cpu"  # smoke runs on the CPU even with a GPU
    assert describe() == "profile: smoke | device: cpu"


def test_seed_everything_repeats_random_draws():
    seed_everything(123)
    first = torch.randn(5)
    generator = seed_everything(123)
    assert torch.equal(first, torch.randn(5))
    same_seed = torch.Generator().manual_seed(123)
    assert torch.equal(torch.randn(3, generator=generator), torch.randn(3, generator=same_seed))
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything("1")


@pytest.mark.usefixtures("one_thread")  # torch's threads are restored after the module
def test_set_threads_by_profile_and_override(monkeypatch):
    monkeypatch.delenv("COURSE_THREADS", raising=False)
    assert set_threads("smoke") == 1 and torch.get_num_threads() == 1
    assert set_threads("cpu") == 2 and torch.get_num_threads() == 2
    assert set_threads("gpu") == min(4, len(os.sched_getaffinity(0)))  # no more threads than cores
    monkeypatch.setenv("COURSE_THREADS", "1")
    assert set_threads("cpu") == 1 and torch.get_num_threads() == 1
    for wrong in ("0", "two", "-1"):
        monkeypatch.setenv("COURSE_THREADS", wrong)
        with pytest.raises(ProfileError, match=f"COURSE_THREADS='{wrong}' is not a number of threads"):
            set_threads("cpu")


@pytest.mark.usefixtures("one_thread")  # torch's threads are restored after the module
def test_two_threads_repeat_bit_for_bit():
    """What the README promises of set_threads: with the same number of threads, training repeats bit for bit."""
    from torch import nn

    def train() -> torch.Tensor:
        seed_everything(0)
        model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
                              nn.Conv2d(32, 32, 3, padding=1), nn.Flatten(), nn.Linear(32 * 32 * 32, 10))
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            x, y = torch.randn(64, 3, 32, 32, generator=generator), torch.randint(0, 10, (64,), generator=generator)
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimiser.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    torch.set_num_threads(2)
    assert torch.equal(train(), train())
