"""Inference precision: ``auto``/``fp32``/``bf16``, refused where it would be emulated, labels kept under bf16."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MaskMedCore.data.phantom import generate_phantom
from MaskMedCore.errors import ConfigError
from MaskMedCore.inference.precision import check_precision, cpu_has_native_bf16, forward_autocast
from MaskMedCore.inference.predictor import Predictor

native_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bfloat16")


def test_precision_values_are_checked():
    cpu = torch.device("cpu")
    assert check_precision("auto", cpu) == "auto" and check_precision("fp32", cpu) == "fp32"
    with pytest.raises(ConfigError, match="precision is 'half'; expected one of auto, fp32, bf16"):
        check_precision("half", cpu)
    if cpu_has_native_bf16():
        assert check_precision("bf16", cpu) == "bf16"
    else:
        with pytest.raises(ConfigError, match="no native bfloat16"):
            check_precision("bf16", cpu)


def test_autocast_follows_the_precision_and_device():
    cpu = torch.device("cpu")
    x = torch.randn(2, 3)
    for precision in ("auto", "fp32"):
        with forward_autocast(cpu, precision, torch.bfloat16):
            assert (x @ x.T).dtype == torch.float32
    if cpu_has_native_bf16():
        with forward_autocast(cpu, "bf16", torch.bfloat16):
            assert (x @ x.T).dtype == torch.bfloat16


@native_bf16
def test_bf16_prediction_keeps_the_labels(quick_run):
    image, _ = generate_phantom(11, shape=(24, 40, 44), spacing=(2.5, 1.5, 1.5))
    fp32 = Predictor.from_checkpoint(quick_run, device="cpu", precision="fp32").predict(image)
    bf16 = Predictor.from_checkpoint(quick_run, device="cpu", precision="bf16").predict(image)
    a, b = sitk.GetArrayFromImage(fp32.labels), sitk.GetArrayFromImage(bf16.labels)
    assert np.mean(a == b) >= 0.99
    np.testing.assert_allclose(fp32.class_probabilities, bf16.class_probabilities, atol=0.05)
