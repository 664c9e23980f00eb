"""helpers.zero123.runs: pairs of two different views, the fixed evaluation pairs, the baselines, tiny training runs
that lower their loss, deterministic generation, and the memorisation check that finds a copied training view."""

import numpy as np
import pytest
import torch

from helpers.zero123 import runs, views
from helpers.zero123.model import denoising_loss, loss_weights
from helpers.zero123.scheduler import DDIM, ZERO123_DDIM

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = runs.Recipe(image_size=16, train_objects=6, autoencoder_channels=(8, 16), autoencoder_steps=3,
                   unet_channels=(16, 32), embed_dim=16, encoder_channels=(8, 16), steps=3, batch_size=4,
                   ddim_steps=3)


def fake_views(objects=6, size=16, seed=0):
    """Coloured squares on white, one colour per object, at a size that shrinks with the camera's radius."""
    rng = np.random.default_rng(seed)
    images = np.full((objects, 12, size, size, 3), 255, np.uint8)
    masks = np.zeros((objects, 12, size, size), bool)
    cameras = np.stack([np.stack([rng.uniform(0.2, 2.9, 12), rng.uniform(-3, 3, 12), rng.uniform(1.5, 2.2, 12)], 1)
                        for _ in range(objects)])
    for o in range(objects):
        colour = rng.integers(0, 200, 3)
        for v in range(12):
            half = int(size / cameras[o, v, 2] / 2)
            masks[o, v, size // 2 - half:size // 2 + half, size // 2 - half:size // 2 + half] = True
            images[o, v][masks[o, v]] = colour
    return runs.view_tensors({"images": images, "masks": masks, "cameras": cameras,
                              "names": np.array([f"fake_{o}" for o in range(objects)])})


def test_view_tensors_and_pairs():
    views = fake_views()
    assert views.images.shape == (6, 12, 3, 16, 16) and views.images.min() >= -1 and views.images.max() <= 1
    o, source, target = runs.random_pairs(6, 12, 500, torch.Generator().manual_seed(0))
    assert (source != target).all() and o.max() < 6 and target.max() < 12
    pairs = runs.evaluation_pairs(views, per_object=3, seed=1)
    again = runs.evaluation_pairs(views, per_object=3, seed=1)
    assert torch.equal(pairs.objects, torch.arange(6).repeat_interleave(3)) and torch.equal(pairs.target, again.target)
    assert torch.equal(pairs.truth, views.images[pairs.objects, pairs.target]) and pairs.poses.shape == (18, 4)
    with pytest.raises(ValueError, match=r"expected views with 'images' \(N, V, S, S, 3\) uint8"):
        runs.view_tensors({"images": np.zeros((2, 16, 16, 3), np.uint8)})


def test_baselines_and_scores():
    views = fake_views()
    pairs = runs.evaluation_pairs(views, per_object=2)
    predictions = runs.baselines(pairs, views)
    assert set(predictions) == {"copy the input view", "mean training view", "all background"}
    table = runs.score_table(predictions | {"the truth": pairs.truth}, pairs)
    assert table["the truth"]["PSNR"] > 90 and table["the truth"]["sharpness"] == pytest.approx(1.0)
    assert table["all background"]["PSNR (object)"] < table["all background"]["PSNR"]


def test_tiny_runs_train_generate_and_export():
    views = fake_views()
    torch.manual_seed(0)
    autoencoder = runs.build_autoencoder(TINY)
    history = runs.train_autoencoder(autoencoder, views.images.flatten(0, 1), steps=3, lr=1e-3, batch_size=4,
                                     chroma_weight=4.0, generator=torch.Generator().manual_seed(0), progress=False)
    assert len(history) == 3 and "chroma" in history.metrics
    latents = runs.encode_views(autoencoder, views.images)
    assert latents.shape == (6, 12, 4, 8, 8)
    scale = 1 / latents.std().item()
    scheduler = DDIM(**ZERO123_DDIM)
    model = runs.build_zero123(TINY, latent_size=8)
    seen = []

    def loss_fn(*args, **kwargs):
        seen.append(kwargs["weights"])
        return denoising_loss(*args, **kwargs)

    weights = loss_weights(scheduler, "truncated-snr")
    history = runs.train_zero123(model, scheduler, views, latents, scale, steps=3, lr=1e-3, batch_size=4,
                                 weights=weights, loss_fn=loss_fn, generator=torch.Generator().manual_seed(1),
                                 progress=False)
    assert len(history) == 3 and all(w is weights for w in seen)
    pairs = runs.evaluation_pairs(views, per_object=1)
    first = runs.generate(model, autoencoder, scheduler, scale, pairs, latents, steps=3, guidance=3.0, batch_size=4)
    second = runs.generate(model, autoencoder, scheduler, scale, pairs, latents, steps=3, guidance=3.0, batch_size=4)
    assert first.shape == (6, 3, 16, 16) and torch.equal(first, second)
    regression = runs.build_zero123(TINY, latent_size=8)
    runs.train_regression(regression, views, latents, scale, steps=3, lr=1e-3, batch_size=4, progress=False,
                          generator=torch.Generator().manual_seed(1))
    assert runs.regression_views(regression, autoencoder, scale, pairs, latents).shape == (6, 3, 16, 16)


def test_nearest_training_view_finds_a_copy():
    views = fake_views()
    copies = views.images[[2, 4], [5, 0]].clone()
    index, distance = runs.nearest_training_views(copies, views)
    assert index[:, 0].tolist() == [2, 4] and torch.all(distance < 1e-3)  # the object (views may look alike)
    assert torch.equal(views.images[index[:, 0], index[:, 1]], copies)
    shifted = torch.roll(copies, 3, dims=-1)
    assert torch.all(runs.nearest_training_views(shifted, views)[1] > 0.05)


def test_recipes_match_the_data_sizes():
    for profile, recipe in runs.RECIPES.items():
        assert (recipe.train_objects, recipe.image_size) == views.PROFILE_SIZES[profile]["train"], profile
        assert all(size == recipe.image_size for _, size in views.PROFILE_SIZES[profile].values())


@pytest.fixture
def untrained():
    """Fake views, an untrained tiny autoencoder and Zero123, the views' latents, one pair per object, the scheduler."""
    views = fake_views()
    torch.manual_seed(0)
    autoencoder, model = runs.build_autoencoder(TINY), runs.build_zero123(TINY, latent_size=8)
    latents = runs.encode_views(autoencoder, views.images)
    return autoencoder, model, latents, runs.evaluation_pairs(views, per_object=1), DDIM(**ZERO123_DDIM)


def test_the_average_of_samples_is_the_mean_of_single_samples(untrained):
    autoencoder, model, latents, pairs, scheduler = untrained
    kwargs = dict(steps=2, guidance=2.0, batch_size=4)
    singles = [runs.generate(model, autoencoder, scheduler, 1.0, pairs, latents, seed=1000 * j, **kwargs)
               for j in range(3)]
    average = runs.generate(model, autoencoder, scheduler, 1.0, pairs, latents, samples=3, **kwargs)
    torch.testing.assert_close(average, sum(singles) / 3)
    assert not torch.equal(singles[0], singles[1])


def test_posterior_means_summarise_the_same_draws_in_views_and_in_latents(untrained):
    autoencoder, model, latents, pairs, scheduler = untrained
    kwargs = dict(steps=2, guidance=1.0, batch_size=4)
    means = runs.posterior_means(model, autoencoder, scheduler, 0.5, pairs, latents, samples=3, **kwargs)
    torch.testing.assert_close(means["views"], runs.generate(model, autoencoder, scheduler, 0.5, pairs, latents,
                                                             samples=3, **kwargs))
    draws = []  # the same three draws by hand: the course's sampler, each batch's noise from seed 1000 · j + b
    for j in range(3):
        parts = [runs.course_sampler(model, scheduler, pairs.inputs[i:i + 4], latents[pairs.objects[i:i + 4],
                                     pairs.source[i:i + 4]] * 0.5, pairs.poses[i:i + 4], steps=2, scale=1.0,
                                     generator=torch.Generator().manual_seed(1000 * j + b))
                 for b, i in enumerate(range(0, len(pairs.objects), 4))]
        draws.append(torch.cat(parts))
    expected = runs.decode_latents(autoencoder, sum(draws) / 3, 0.5)
    torch.testing.assert_close(means["latents"], expected)
    assert not torch.allclose(means["latents"], means["views"], atol=1e-3)  # decoding is not linear


def test_first_step_estimate_is_the_x0_of_the_first_step(untrained):
    _, model, latents, pairs, scheduler = untrained
    args = (model.eval(), scheduler, pairs.inputs, latents[pairs.objects, pairs.source], pairs.poses)
    estimate = runs.first_step_estimate(*args, steps=5, scale=2.0, generator=torch.Generator().manual_seed(3))
    # by hand: the same x_T, one guided call at t = 801 (5 "leading" steps offset by 1), DDIM's x̂_0
    x = torch.randn(estimate.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        noise = model.denoiser(*args[2:], scale=2.0)(x, torch.tensor(801))
    alpha_bar = scheduler.alphas_cumprod[801]
    torch.testing.assert_close(estimate, (x - (1 - alpha_bar).sqrt() * noise) / alpha_bar.sqrt())


def test_paired_gaps_compare_methods_pair_by_pair():
    views = fake_views()
    pairs = runs.evaluation_pairs(views, per_object=2)
    predictions = runs.baselines(pairs, views) | {"the truth": pairs.truth}
    per_image = runs.per_image_table(predictions, pairs)
    assert per_image["all background"]["PSNR"].shape == (12,)
    gaps = runs.paired_gaps(per_image, "the truth", ["copy the input view", "all background"])
    for other, row in gaps.items():
        for metric, (mean, se) in row.items():
            expected = per_image["the truth"][metric] - per_image[other][metric]
            assert mean == pytest.approx(expected.mean()) and se == pytest.approx(expected.std(ddof=1) / 12 ** 0.5)
            assert mean > 3 * se, (other, metric)  # the truth is ahead of every baseline, clearly
    by_object = runs.paired_gaps(per_image, "the truth", ["all background"], groups=pairs.objects)["all background"]
    for metric, (mean, se) in by_object.items():  # the same gap, its error counted over the 6 objects
        gap = per_image["the truth"][metric] - per_image["all background"][metric]
        assert mean == pytest.approx(gap.mean())
        assert se == pytest.approx(gap.reshape(6, 2).mean(1).std(ddof=1) / 6 ** 0.5)
