"""helpers.common.npz: the data caches' .npz files round-trip and are written whole, with no scratch file left."""

import numpy as np
import pytest

from helpers.common import npz


@pytest.mark.parametrize("compressed", [True, False])
def test_arrays_round_trip_and_no_scratch_file_is_left(tmp_path, compressed):
    arrays = {"images": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "names": np.array(["duck", "mug"])}
    path = npz.save(tmp_path / "deeper" / "set_v1.npz", arrays, compressed=compressed)
    assert path == tmp_path / "deeper" / "set_v1.npz" and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    again = npz.load(path)
    assert set(again) == set(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(again[key], value)
        assert again[key].dtype == value.dtype


def test_saving_again_replaces_the_file(tmp_path):
    path = npz.save(tmp_path / "a.npz", {"x": np.zeros(3)})
    npz.save(path, {"x": np.ones(5)})
    np.testing.assert_array_equal(npz.load(path)["x"], np.ones(5))
