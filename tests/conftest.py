"""Fixtures shared by several test modules."""

import pytest

import gradwatch
import models


@pytest.fixture(scope="session")
def results():
    """A passing check and one with a planted bug in dW1 (tiny MLP, seeded): real CheckResults to log."""
    model = models.mlp([4, 5, 3], seed=0)
    good = gradwatch.check_gradients(model.loss, model.params, model.backward(model.params), seed=0)
    grads = model.backward(model.params)
    grads["dW1"][0, 0] += 0.1
    bad = gradwatch.check_gradients(model.loss, model.params, grads, seed=0)
    assert good.passed and not bad.passed and bad.failed == ("W1",)
    return good, bad


def pytest_configure(config):
    config.addinivalue_line("markers", "network: needs the package index (pip install into a fresh venv)")
