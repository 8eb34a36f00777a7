"""Downloads that cannot fit are refused before their first byte, in words that say where the space is short."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from backend.model.download import DISK_MARGIN_BYTES, check_disk, free_bytes
from backend.core.errors import ErrorCode, LayerBridgeError


def test_free_bytes_of_a_folder_yet_to_be_made_is_its_disks():
    # the Hub cache folder does not exist before the first download: its nearest parent's disk counts
    assert abs(free_bytes(Path("/tmp/no/such/cache")) - shutil.disk_usage("/tmp").free) < 64 * 1024**2


def test_a_download_larger_than_the_free_space_is_refused_up_front(tmp_path):
    cache = tmp_path / "hub" / "models--Qwen--Qwen-Image-Layered"
    free = free_bytes(cache)
    with pytest.raises(LayerBridgeError) as info:
        check_disk(cache, free - DISK_MARGIN_BYTES + 1024**3, "'Qwen/Qwen-Image-Layered'")
    assert info.value.code == ErrorCode.model_unavailable
    message = info.value.message
    assert f"{free / 1e9:.1f} GB free" in message and str(cache) in message and "HF_HOME" in message
    assert not cache.exists()  # nothing made on the way


def test_a_download_that_fits_or_has_nothing_left_goes_ahead(tmp_path):
    check_disk(tmp_path, 1024**2, "a small file")
    check_disk(tmp_path, 0, "a cached model")  # a full cache on a full disk still loads
