"""Fixtures shared by the core tests."""
import pytest
import torch

from mlora_core.builtin_model import build_tokenizer


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread. Two threads on 2 busy shared cores made each small op 10-40x slower
    (OpenMP workers waiting on each other), test_evaluate_mc's 15 s became 6 min. A module asks for
    it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok():
    """The builtin tokenizer (built in code, no files)."""
    return build_tokenizer()
