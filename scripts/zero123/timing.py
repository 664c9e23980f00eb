"""Time one training step of Zero-1-to-3's parts, to size the lab's profiles: prints one JSON line per setting.

    python scripts/zero123/timing.py                 # one thread, batch 32, the default grid
    python scripts/zero123/timing.py --threads 2 --device cuda --batch 64

A step is forward, backward and an AdamW update, on random data of the right shapes (time does not depend on the
values). "denoiser" is helpers.zero123.model.Zero123 (image encoder + pose-CLIP + 8-channel UNet) trained
with denoising_loss on latents of side --latent; "autoencoder" is helpers.zero123.autoencoder.Autoencoder trained with
autoencoder_loss on images of side --image. Each line has the median of --repeat steps after --warmup.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/zero123/timing.py` from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from helpers.zero123.autoencoder import Autoencoder, AutoencoderConfig, autoencoder_loss  # noqa: E402
from helpers.zero123.conditioning import ImageEncoder  # noqa: E402
from helpers.zero123.model import Zero123, denoising_loss  # noqa: E402
from helpers.zero123.scheduler import DDIM, ZERO123_DDIM  # noqa: E402
from helpers.zero123.unet import UNet, UNetConfig  # noqa: E402

DENOISERS = [  # (latent side, UNet channels, attention per level, image side of the input view)
    (8, (32, 64), (True, False), 32),
    (8, (64, 128), (True, False), 32),
    (8, (64, 128, 128), (True, True, False), 32),
    (16, (32, 64), (True, False), 64),
    (16, (32, 64, 128), (True, True, False), 64),
    (16, (64, 128, 128), (True, True, False), 64),
]
AUTOENCODERS = [(32, (16, 32, 32)), (32, (16, 32, 64)), (32, (32, 64, 64)), (32, (64, 128, 128)),
                (64, (16, 32, 64)), (64, (32, 64, 64)), (64, (64, 128, 128))]


def _timed(step, warmup: int, repeat: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_denoiser(latent: int, channels: tuple[int, ...], attention: tuple[bool, ...], image: int, batch: int,
                  device: torch.device, warmup: int, repeat: int) -> dict:
    embed = 64
    unet = UNet(UNetConfig(block_out_channels=channels, cross_attention=attention, num_heads=4,
                           cross_attention_dim=embed, sample_size=latent))
    model = Zero123(unet, ImageEncoder(embed, image_size=image)).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = DDIM(**ZERO123_DDIM)
    data = dict(target_latent=torch.randn(batch, 4, latent, latent, device=device),
                input_latent=torch.randn(batch, 4, latent, latent, device=device),
                input_image=torch.rand(batch, 3, image, image, device=device) * 2 - 1,
                pose=torch.tensor([[0.3, 0.6, 0.8, 0.1]], device=device).expand(batch, 4))

    def step():
        loss = denoising_loss(model, scheduler, **data)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    seconds = _timed(step, warmup, repeat, device)
    return dict(part="denoiser", latent=latent, channels=channels, attention=attention, image=image, batch=batch,
                parameters=sum(p.numel() for p in model.parameters()), seconds_per_step=round(seconds, 4))


def time_autoencoder(image: int, channels: tuple[int, ...], batch: int, device: torch.device, warmup: int,
                     repeat: int) -> dict:
    model = Autoencoder(AutoencoderConfig(block_out_channels=channels, sample_size=image,
                                          norm_num_groups=min(8, channels[0]))).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.rand(batch, 3, image, image, device=device) * 2 - 1

    def step():
        loss, _ = autoencoder_loss(model, images)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    seconds = _timed(step, warmup, repeat, device)
    return dict(part="autoencoder", image=image, latent=model.config.latent_size, channels=channels, batch=batch,
                parameters=sum(p.numel() for p in model.parameters()), seconds_per_step=round(seconds, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=["denoiser", "autoencoder"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.only != "autoencoder":
        for latent, channels, attention, image in DENOISERS:
            print(json.dumps(time_denoiser(latent, channels, attention, image, args.batch, device, args.warmup,
                                           args.repeat)), flush=True)
    if args.only != "denoiser":
        for image, channels in AUTOENCODERS:
            print(json.dumps(time_autoencoder(image, channels, args.batch, device, args.warmup, args.repeat)),
                  flush=True)


if __name__ == "__main__":
    main()
