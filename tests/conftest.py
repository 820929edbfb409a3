import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _kdbench_cache(tmp_path_factory):
    """Every test shares one throwaway pretraining cache; none touches ~/.cache."""
    os.environ["KDBENCH_CACHE"] = str(tmp_path_factory.mktemp("kdbench-cache"))
    yield
