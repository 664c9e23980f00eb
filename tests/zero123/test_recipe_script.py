"""scripts/zero123/recipe.py (how Lab 5's recipe was chosen): a tiny run repeats exactly and reports what it says."""

import json
import subprocess
import sys

import pytest

from helpers.paths import REPO_ROOT


@pytest.mark.slow
def test_recipe_script_repeats_and_reports_every_method(tmp_path):
    outputs = [tmp_path / "first.json", tmp_path / "second.json"]
    for out in outputs:
        command = [sys.executable, str(REPO_ROOT / "scripts" / "zero123" / "recipe.py"), "--profile", "smoke",
                   "--autoencoder-steps", "3", "--steps", "3", "--scales", "1", "--samples", "2", "--out", str(out)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    first, second = ([{k: v for k, v in row.items() if k not in ("minutes", "seconds")} for row in
                      json.loads(out.read_text())] for out in outputs)
    assert first == second  # the same arguments give the same numbers
    assert first[0]["recipe"]["steps"] == 3 and first[0]["recipe"]["autoencoder_steps"] == 3
    steps = {row.get("step") for row in first}
    assert {"data", "autoencoder", "baseline", "gap", "diffusion trained", "regression trained", "evaluation"} <= steps
    methods = {row["method"] for row in first if row.get("step") == "evaluation"}
    assert methods == {"diffusion, guidance 1", "diffusion, guidance 1, mean of 2 samples", "regression",
                       "diffusion, guidance 1, decoded mean latent of 2 samples",
                       "diffusion's first-step estimate, guidance 1"}, methods
    gaps = {(row["method"], row["over"]) for row in first if row.get("step") == "gap"}
    assert len(gaps) == 3 * 5, gaps  # every method over each of the three untrained baselines
    for row in first:
        if row.get("step") == "evaluation":
            assert 0 < row["PSNR"] < 60 and -1 <= row["SSIM"] <= 1, row
