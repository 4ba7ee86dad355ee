"""Ten epochs of deferred decoding leave no memory behind (CI version of benchmarks/memory.py).

Two measures per epoch: RSS (the issue's figure: growth under 5 %) and the bytes in use from
malloc, which is exact where RSS is blind: a small leak first fills the allocator's free
holes without moving RSS. A control run that keeps every rendered batch shows the in-use
measure catches a leak of that size (0.375 MB per epoch here), so the test can fail.
"""

from __future__ import annotations

import pytest

from benchmarks.memory import make_dataset, malloc_in_use, measure

EPOCHS = 10


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("mem"), images=128)


@pytest.mark.slow
@pytest.mark.skipif(malloc_in_use() is None, reason="needs glibc's mallinfo2")
@pytest.mark.parametrize("path", ["torchvision", "webdataset"])
def test_no_growth_over_ten_epochs(root, path):
    result = measure(root, path, epochs=EPOCHS, batch=32, workers=0)
    assert result["samples_per_epoch"] == [128] * EPOCHS
    assert result["main_growth_from_epoch1"] < 0.05, result["main_rss_mb"]
    in_use = result["main_malloc_in_use_mb"]  # from epoch 2: epoch 1 may still free what earlier tests cached
    assert in_use[-1] - in_use[1] < 1.0, in_use


@pytest.mark.slow
@pytest.mark.skipif(malloc_in_use() is None, reason="needs glibc's mallinfo2")
def test_the_measure_sees_a_leak(root):
    leaky = measure(root, "torchvision", epochs=EPOCHS, batch=32, workers=0, leak=True)
    per_epoch_mb = 128 * 3 * 16 * 16 * 4 / 2**20  # the rendered batches kept each epoch
    in_use = leaky["main_malloc_in_use_mb"]
    assert in_use[-1] - in_use[1] > 0.8 * per_epoch_mb * (EPOCHS - 2), in_use
