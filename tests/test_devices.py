"""--device values: auto picks what exists, explicit names are checked with a clear error."""

from __future__ import annotations

import pytest
import torch

from dispose.devices import resolve_device
from dispose.errors import UserError


def test_auto_and_cpu():
    expected = ("cuda" if torch.cuda.is_available()
                else ("mps" if torch.backends.mps.is_available() else "cpu"))
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_bad_names_are_user_errors():
    with pytest.raises(UserError, match="not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device("cuda:1")
