"""Cross-check Dice, HD95 and NSD against MONAI on the same random-blob label maps.

Definitions agree: MONAI (``use_subvoxels=False``) also takes the surface as ``mask ^ erosion(mask)``
with scipy's default 6-connected structure, measures exact Euclidean voxel-centre distances in mm
(a k-d tree on the CPU), takes the max of the two directed percentiles (``torch.quantile``, linear
like numpy's default) and counts NSD over both surfaces with ``<=``. MONAI computes in float32:
the largest differences seen are ~3e-8 for Dice and NSD and ~7e-6 mm for HD95. At a tolerance that
equals a voxel distance (3.3 mm = 3 x 1.1 mm here) float32 rounds the distance onto the tolerance
while float64 rounds it just above; our 1e-6 mm slack counts it as within, like MONAI. The
definitions differ only for empty masks, which are not compared here (MONAI: Dice nan or 1 by
``ignore_empty``, HD inf/nan, NSD nan).
"""

import numpy as np
import pytest
import torch
from scipy import ndimage

from MaskMedCore.metrics import dice_score, surface_metrics

monai_metrics = pytest.importorskip("monai.metrics")
# MONAI 1.5+ warns about its own deprecated argument inside compute_hausdorff_distance.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

SPACING = (2.5, 0.8, 1.1)
K = 4  # classes including background


def random_label_maps(seed: int, shape=(28, 36, 32)):
    """Smooth random blobs in 3 foreground classes, and a perturbed copy as the prediction."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((3, *shape)), (0, 2.5, 2.5, 2.5))
    ref = np.where(field.max(0) > 0.06, field.argmax(0) + 1, 0)
    noisy = ndimage.gaussian_filter(field + 0.04 * rng.standard_normal(field.shape), (0, 1, 1, 1))
    pred = np.where(noisy.max(0) > 0.07, noisy.argmax(0) + 1, 0)
    return pred.astype(np.int64), ref.astype(np.int64)


def one_hot(label_map: np.ndarray) -> torch.Tensor:
    """(D, H, W) labels -> (1, K, D, H, W) float one-hot, as MONAI expects."""
    t = torch.from_numpy(label_map)
    return torch.nn.functional.one_hot(t, K).permute(3, 0, 1, 2)[None].float()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("tolerance_mm", [1.0, 2.0, 3.3])
def test_agrees_with_monai(seed, tolerance_mm):
    pred, ref = random_label_maps(seed)
    y_pred, y = one_hot(pred), one_hot(ref)
    for k in range(1, K):
        assert (pred == k).any() and (ref == k).any(), "each class must be present in both for the comparison"

    monai_dice = monai_metrics.compute_dice(y_pred, y, include_background=False)[0]
    monai_hd95 = monai_metrics.compute_hausdorff_distance(
        y_pred, y, include_background=False, percentile=95, spacing=list(SPACING)
    )[0]
    monai_nsd = monai_metrics.compute_surface_dice(
        y_pred, y, class_thresholds=[tolerance_mm] * (K - 1), include_background=False, spacing=list(SPACING)
    )[0]

    for k in range(1, K):
        ours = surface_metrics(pred == k, ref == k, SPACING, tolerance_mm=tolerance_mm)
        assert dice_score(pred == k, ref == k) == pytest.approx(monai_dice[k - 1].item(), abs=1e-6)
        assert ours.hd95 == pytest.approx(monai_hd95[k - 1].item(), abs=1e-4)
        assert ours.nsd == pytest.approx(monai_nsd[k - 1].item(), abs=1e-6)


def test_blobs_are_not_trivial():
    """The cross-check inputs have non-trivial scores (a comparison of 1.0 with 1.0 would prove little)."""
    pred, ref = random_label_maps(0)
    for k in range(1, K):
        m = surface_metrics(pred == k, ref == k, SPACING, tolerance_mm=2.0)
        assert 0.5 < dice_score(pred == k, ref == k) < 0.99
        assert m.hd95 > 1.0 and 0.3 < m.nsd < 1.0
