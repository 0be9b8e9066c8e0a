"""`release_clean_file_pages`: the resident pages of a clean memory-mapped weight file are dropped losslessly; a
mapping with a written page is left alone (releasing it would revert the write)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from bioclip_hf.utils.memory import release_clean_file_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
SIZE = 64 * 2**20


def rss_file() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssFile:"))


@pytest.fixture
def weights_file(tmp_path):
    path = tmp_path / "blob"  # HF cache blobs carry no suffix: mappings are found by the tensors' addresses
    np.random.default_rng(0).standard_normal(SIZE // 4, dtype=np.float32).tofile(path)
    return path


def test_clean_mapping_is_released_and_reads_back_the_same(weights_file):
    tensor = torch.from_numpy(np.memmap(weights_file, np.float32, "c"))
    expected = float(tensor.double().sum())  # touches every page
    before = rss_file()
    released = release_clean_file_pages([tensor, torch.zeros(3)])  # an anonymous tensor is ignored
    assert released > 0.9 * SIZE and rss_file() < before - 0.9 * SIZE
    assert float(tensor.double().sum()) == expected  # mapped again from the page cache, unchanged


def test_mapping_with_a_written_page_is_kept(weights_file):
    tensor = torch.from_numpy(np.memmap(weights_file, np.float32, "c"))
    tensor[0] = 12345.0  # copy-on-write: this mapping now holds a private, modified page
    tensor.double().sum()
    before = rss_file()
    assert release_clean_file_pages([tensor]) == 0
    assert rss_file() > before - 2**20 and float(tensor[0]) == 12345.0
