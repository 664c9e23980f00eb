"""Try a training recipe for the small SAM of Lab 3: train one model from a random encoder on the rendered training
scenes, then print its held-out mIoU (the lab's four prompts) as one JSON line.

It is how the lab's settings were chosen on a CPU, e.g. 16 objects per scene against 4:

    python scripts/sam/recipe.py --patch 8 --objects 4 --steps 500 --seed 0
    python scripts/sam/recipe.py --patch 8 --objects 16 --steps 500 --seed 0

The model is the lab's `cpu` size (width 64, 4 blocks, prompt width 64) unless --width/--depth say otherwise; the
scenes are those of --profile (rendered and cached by helpers.sam.scenes on first use). Training is
helpers.sam.runs.train_sam with the course's own loss and simulated user, AdamW at --lr, 3 rounds; one thread, so a run
repeats exactly. The mask loss is the lab's relaxed minimum (Part C, ε = 0.1) unless --epsilon says otherwise.
--mae-steps N first pretrains the encoder as a masked autoencoder on the same scenes, as Lab 3's Section 4 does
(batch 32, learning rate 2e-3, the lab's decoder), to measure what that pretraining is worth at a given length.
--out appends the JSON line to a file.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/sam/recipe.py` from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from helpers.sam import ImageEncoderViT, runs, scenes  # noqa: E402
from helpers.sam import mae as mae_lib  # noqa: E402
from helpers.sam import training as sam_training  # noqa: E402
from helpers.sam.config import SamConfig  # noqa: E402
from helpers.sam.model import Sam  # noqa: E402


def recipe_config(size: int, patch: int, width: int, depth: int, window: int) -> SamConfig:
    """The lab's `cpu`-sized SAM for size × size images, with the patch size, encoder width and depth given."""
    return SamConfig(img_size=size, patch_size=patch, encoder_embed_dim=width, encoder_depth=depth,
                     encoder_num_heads=4, encoder_window_size=window,
                     encoder_global_attn_indexes=tuple(range(1, depth, 2)), prompt_embed_dim=64, mask_in_chans=16,
                     decoder_depth=2, decoder_num_heads=4, decoder_mlp_dim=256, iou_head_hidden_dim=64)


def main(argv: list[str] | None = None) -> dict[str, float | int | str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="whose scenes: smoke, cpu or gpu (default cpu)")
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--width", type=int, default=64, help="encoder width D")
    parser.add_argument("--depth", type=int, default=4, help="encoder blocks (every second one global)")
    parser.add_argument("--window", type=int, default=4, help="window side of the windowed blocks, in patches")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--images", type=int, default=8, help="scenes per step")
    parser.add_argument("--objects", type=int, default=4, help="objects drawn from each scene per step")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--epsilon", type=float, default=0.1,
                        help="ε of the relaxed minimum over the three masks, as in the lab (0: the paper's min)")
    parser.add_argument("--mae-steps", type=int, default=0, help="MAE pretraining steps of the encoder (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and every random draw of training")
    parser.add_argument("--out", type=Path, help="append the result to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    sizes = scenes.profile_sizes(args.profile)
    train = scenes.load("train", *sizes["train"])
    images, maps = runs.scene_tensors(train)
    val_images, val_maps = runs.scene_tensors(scenes.load("val", *sizes["val"]))
    owner, masks = sam_training.all_objects(val_maps)

    torch.manual_seed(1 + args.seed)
    model = Sam(recipe_config(images.shape[-1], args.patch, args.width, args.depth, args.window))
    start = time.perf_counter()
    if args.mae_steps:
        torch.manual_seed(args.seed)
        encoder = ImageEncoderViT(model.config)
        mae = mae_lib.MaskedAutoencoder(encoder, decoder_dim=64, decoder_depth=1, decoder_num_heads=4)
        mae_lib.train_mae(mae, mae_lib.prepare_images(train["images"], model.config), steps=args.mae_steps,
                          batch_size=32, lr=2e-3,
                          generator=torch.Generator().manual_seed(args.seed))
        model.image_encoder.load_state_dict(encoder.state_dict())
    runs.train_sam(model, images, maps, steps=args.steps, lr=args.lr, images_per_step=args.images,
                      objects_per_image=args.objects,
                      loss_fn=functools.partial(sam_training.sam_loss, epsilon=args.epsilon),
                      generator=torch.Generator().manual_seed(args.seed), progress=False)
    seconds = time.perf_counter() - start
    evaluation = runs.evaluate_prompts(model, val_images, owner, masks)
    result = {**{k: v for k, v in vars(args).items() if k != "out"}, "training_seconds": round(seconds),
              "held_out_objects": len(masks), **{k: round(v, 3) for k, v in evaluation.miou().items()}}
    line = json.dumps(result)
    print(line)
    if args.out is not None:
        with args.out.open("a") as file:
            file.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
