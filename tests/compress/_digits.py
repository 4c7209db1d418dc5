"""Small models trained on scikit-learn's digits (ships offline), shared by the
compression tests (conftest.py imports these fixtures). Everything is seeded and runs on one thread."""

import copy

import pytest
import torch
from torch import nn

from lowbit.compress import evaluate, finetune, seed_everything


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    f = lambda a: torch.tensor(a, dtype=torch.float32) / 16.0  # noqa: E731
    lab = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return {"train": (f(Xtr), lab(ytr)), "test": (f(Xte), lab(yte)),
            "train_img": (f(Xtr).reshape(-1, 1, 8, 8), lab(ytr)), "test_img": (f(Xte).reshape(-1, 1, 8, 8), lab(yte))}


class MLP(nn.Module):
    def __init__(self, hidden=128):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class Block(nn.Module):
    """A residual block: the add forces its convs and the skip path to keep the same channels."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class CNN(nn.Module):
    def __init__(self, c=32):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.block = Block(c)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False)
        self.bn_down = nn.BatchNorm2d(2 * c)
        self.head = nn.Linear(2 * c * 16, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = self.block(x)
        x = torch.relu(self.bn_down(self.down(x)))
        return self.head(torch.flatten(x, 1))


_cache = {}


def _trained(kind, digits):
    if kind not in _cache:
        seed_everything(0)
        if kind == "mlp":
            model, data, epochs = MLP(), digits["train"], 40
        else:
            model, data, epochs = CNN(), digits["train_img"], 15
        finetune(model, data, epochs=epochs, lr=3e-3, seed=0, progress_bar=False)
        model.eval()
        _cache[kind] = model
    return copy.deepcopy(_cache[kind])


@pytest.fixture
def mlp(digits):
    """(trained fp32 MLP, train data, test data, fp32 test accuracy) - a fresh copy per test."""
    m = _trained("mlp", digits)
    return m, digits["train"], digits["test"], evaluate(m, digits["test"])


@pytest.fixture
def cnn(digits):
    m = _trained("cnn", digits)
    return m, digits["train_img"], digits["test_img"], evaluate(m, digits["test_img"])
