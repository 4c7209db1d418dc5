import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/models.py and friends

import lowbit  # noqa: E402

ISAS = lowbit.cpu_info()["supported_isas"]


@pytest.fixture
def tmp_qbin(tmp_path):
    return str(tmp_path / "model.qbin")


@pytest.fixture
def threads():
    """Restores the thread count after a test changes it."""
    before = lowbit.get_num_threads()
    yield
    lowbit.set_num_threads(before)
