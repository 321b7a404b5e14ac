"""Instances from query masks (issue 12): candidates, merging across tiles, boxes, input geometry, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MaskMedCore.cli import main
from MaskMedCore.config import PlanConfig
from MaskMedCore.data.preprocessing import nearest_indices, preprocess_case
from MaskMedCore.engine.checkpoint import Checkpoint, save_checkpoint
from MaskMedCore.errors import ConfigError
from MaskMedCore.inference.instance_results import TileOutputCollector, restore_instances
from MaskMedCore.inference.instances import (
    Instance,
    InstanceCandidate,
    MergedInstances,
    head_box_to_volume,
    merge_candidates,
    tile_candidates,
)
from MaskMedCore.inference.predictor import Prediction, Predictor
from MaskMedCore.inference.sliding_window import TilePass, sliding_window_predict, tile_positions
from MaskMedCore.models.build import build_model
from MaskMedCore.models.outputs import MaskMedOutput

LABELS = {"background": 0, "organ": 1, "lesion": 2}
LESION = 2


# ------------------------------------------------------------------------------------------ candidates
def _logits(probs):
    """Class logits whose softmax is ``probs`` (Q, K+1)."""
    return torch.tensor(probs, dtype=torch.float32).log()


def test_candidates_are_scored_and_thresholded():
    d, h, w = 8, 10, 12
    masks = torch.full((4, d, h, w), -6.0)
    masks[0, 2:5, 3:6, 1:4] = 4.0  # lesion, confident mask
    masks[1, 0:2, 0:2, 0:2] = 4.0  # organ: a semantic class, never an instance
    masks[2, 4:6, 4:6, 4:6] = 0.2  # lesion, barely a mask: sigmoid 0.55
    masks[3, 1:3, 1:3, 1:3] = 4.0  # mostly no object
    cls = _logits([[0.02, 0.03, 0.9, 0.05], [0.05, 0.9, 0.03, 0.02], [0.05, 0.05, 0.85, 0.05], [0.1, 0.1, 0.2, 0.6]])
    found = tile_candidates(cls, masks, (LESION,), (10, 20, 30), (40, 40, 50))
    assert [c.query for c in found] == [0]
    (c,) = found
    assert c.class_value == LESION
    assert c.score == pytest.approx(0.9 * torch.sigmoid(torch.tensor(4.0)).item(), rel=1e-5)
    assert c.origin == (12, 23, 31) and c.mask.shape == (3, 3, 3) and c.mask.all() and c.box is None
    # A lower threshold lets the weak mask in with score 0.85 x 0.55; query 3 needs threshold <= 0.2.
    low = tile_candidates(cls, masks, (LESION,), (10, 20, 30), (40, 40, 50), threshold=0.3)
    assert [c.query for c in low] == [0, 2]
    assert low[1].score == pytest.approx(0.85 * torch.sigmoid(torch.tensor(0.2)).item(), rel=1e-5)
    assert [c.query for c in tile_candidates(cls, masks, (LESION,), (0, 0, 0), (8, 10, 12), threshold=0.15)] == [
        0,
        2,
        3,
    ]
    # The organ class as an instance class makes query 1 a candidate.
    assert [c.query for c in tile_candidates(cls, masks, (1, LESION), (0, 0, 0), (8, 10, 12))] == [0, 1]


def test_candidate_voxels_in_the_padding_are_dropped():
    masks = torch.full((1, 4, 4, 4), -6.0)
    masks[0, 1:4, 1:4, 1:4] = 5.0
    cls = _logits([[0.01, 0.01, 0.97, 0.01]])
    # The tile starts one voxel before the volume along D and reaches one voxel past it along W.
    (c,) = tile_candidates(cls, masks, (LESION,), (-1, 0, 3), (6, 6, 6))
    assert c.origin == (0, 1, 4) and c.mask.shape == (3, 3, 2)
    assert tile_candidates(cls, masks, (LESION,), (0, 0, 6), (6, 6, 6)) == []  # wholly in the padding


def test_head_box_to_volume_coordinates():
    box = torch.tensor([0.5, 0.25, 0.5, 0.25, 0.125, 0.5])  # (cz, cy, cx, d, h, w)
    np.testing.assert_allclose(head_box_to_volume(box, (4, 8, 12), (16, 32, 32)), [10, 14, 20, 14, 18, 36])
    # A box around tile voxels 2..4 x 3..5 x 1..3 (inclusive) = edges 2..5 x 3..6 x 1..4.
    tile = np.array([8, 10, 12], dtype=np.float64)
    a, b = np.array([2, 3, 1]), np.array([5, 6, 4])
    frac = torch.tensor(np.concatenate([(a + b) / 2 / tile, (b - a) / tile]), dtype=torch.float32)
    masks = torch.full((1, 8, 10, 12), -6.0)
    masks[0, 2:5, 3:6, 1:4] = 4.0
    (c,) = tile_candidates(
        _logits([[0.01, 0.01, 0.97, 0.01]]), masks, (LESION,), (10, 20, 30), (40, 40, 50), boxes=frac[None]
    )
    np.testing.assert_allclose(c.box, [12, 23, 31, 15, 26, 34], atol=1e-5)
    assert c.origin == (12, 23, 31)  # the mask's first voxel = the box's first edge
    # The training targets' boxes (the head learns these) use the same convention.
    from MaskMedCore.losses.box_losses import boxes_from_masks

    target = boxes_from_masks(masks[:1] > 0)[0]
    np.testing.assert_allclose(head_box_to_volume(target, (10, 20, 30), (8, 10, 12)), c.box, atol=1e-5)
    with pytest.raises(ValueError, match="boxes must be"):
        tile_candidates(_logits([[0.01, 0.01, 0.97, 0.01]]), masks, (LESION,), (0, 0, 0), (8, 10, 12), boxes=frac)


# -------------------------------------------------------------------------------------------- merging
def _cand(score, lo, hi, cls=LESION, query=0, box=None):
    """A box-shaped candidate covering voxels lo..hi-1."""
    shape = tuple(b - a for a, b in zip(lo, hi))
    return InstanceCandidate(cls, score, tuple(lo), np.ones(shape, dtype=bool), query, box)


def test_two_tiles_seeing_one_lesion_merge():
    strong = _cand(0.9, (4, 4, 4), (10, 10, 10), query=3, box=np.arange(6.0))
    weak = _cand(0.8, (4, 4, 6), (10, 10, 11), query=5, box=np.ones(6))  # 5/6 inside, one new slab
    for order in ([strong, weak], [weak, strong]):
        merged = merge_candidates(order, (16, 16, 16))
        assert len(merged.instances) == 1
        inst = merged.instances[0]
        assert (inst.id, inst.score, inst.query) == (1, 0.9, 3)
        np.testing.assert_array_equal(inst.box, np.arange(6.0))  # the higher-scored part's head box
        expected = np.zeros((16, 16, 16), dtype=np.int32)
        expected[4:10, 4:10, 4:11] = 1  # the union
        np.testing.assert_array_equal(merged.label_map, expected)
        assert merged.label_map.dtype == np.int32


def test_overlapping_lesions_are_resolved_by_score():
    a = _cand(0.7, (2, 2, 2), (8, 8, 8), query=1)  # 216 voxels
    b = _cand(0.9, (2, 2, 7), (8, 8, 13), query=2)  # shares one 6x6 slab with a: 1/6 of each
    merged = merge_candidates([a, b], (10, 10, 16))
    assert [(i.id, i.query, i.score) for i in merged.instances] == [(1, 2, 0.9), (2, 1, 0.7)]
    m = merged.label_map
    assert (m[2:8, 2:8, 7] == 1).all()  # the shared voxels belong to the higher score
    assert (m == 1).sum() == 216 and (m == 2).sum() == 180
    # Flipping the scores flips the ids and the shared voxels.
    a.score, b.score = 0.95, 0.9
    m = merge_candidates([a, b], (10, 10, 16)).label_map
    assert (m[2:8, 2:8, 7] == 1).all() and (m == 1).sum() == 216 and (m == 2).sum() == 180


def test_weak_duplicates_are_dropped():
    strong = _cand(0.9, (0, 0, 0), (10, 10, 10))
    # 40 % inside a lesion: not the same object (< 50 %), only 60 % unclaimed (< 80 %): dropped.
    partial = _cand(0.6, (0, 0, 6), (10, 10, 16))
    merged = merge_candidates([strong, partial], (10, 10, 16))
    assert len(merged.instances) == 1 and (merged.label_map == 1).sum() == 1000
    # Another class inside a lesion is never "the same object": dropped (0 % unclaimed), not merged.
    organ_dup = _cand(0.8, (2, 2, 2), (6, 6, 6), cls=1)
    merged = merge_candidates([strong, organ_dup], (10, 10, 16))
    assert [i.class_value for i in merged.instances] == [LESION] and (merged.label_map == 1).sum() == 1000
    # ...but another class next to it with >= 80 % of its own voxels is kept.
    organ = _cand(0.8, (0, 0, 9), (10, 10, 16), cls=1)  # 1/7 overlaps
    merged = merge_candidates([strong, organ], (10, 10, 16))
    assert [(i.id, i.class_value) for i in merged.instances] == [(1, LESION), (2, 1)]
    assert (merged.label_map == 2).sum() == 600


# --------------------------------------------------------------------------------- sliding-window tiles
def test_sliding_window_reports_tile_origins_and_passes():
    image = torch.randn(1, 6, 20, 18)
    seen = []

    def fn(tiles, info):
        seen.append(info)
        return tiles * 2

    out = sliding_window_predict(image, fn, (8, 8, 8), center_padding=True, mirror_axes=(1,), tile_info=True)
    torch.testing.assert_close(out, image * 2)
    starts = [tuple(s.start for s in sl) for sl in tile_positions((8, 20, 18), (8, 8, 8), 0.5)]
    plain = [i for i in seen if not i.mirrored]
    assert [o for i in plain for o in i.origins] == starts
    assert [o for i in seen if i.mirror_axes == (1,) for o in i.origins] == starts
    assert {(i.pass_index, i.mirror_axes, i.num_passes) for i in seen} == {(0, (), 2), (1, (1,), 2)}
    assert seen[0].pad_before == (1, 0, 0) and seen[0].input_shape == (6, 20, 18)
    assert seen[0].input_origins[0] == (-1, 0, 0)
    # Without tile_info, predict_fn gets the tiles only (every existing caller).
    torch.testing.assert_close(sliding_window_predict(image, lambda t: t * 2, (8, 8, 8)), image * 2)


# ------------------------------------------------------------------------------------- input geometry
def _plan(**changes) -> PlanConfig:
    base = dict(
        dataset_name="lesions",
        channel_names=("CT",),
        labels=LABELS,
        file_ending=".nii.gz",
        normalization=({"scheme": "none"},),
        target_spacing=(2.0, 1.0, 1.0),
        patch_size=(8, 16, 16),
        batch_size=2,
        features_per_stage=(8, 16),
        kernel_sizes=((3, 3, 3),) * 2,
        strides=((1, 1, 1), (2, 2, 2)),
        median_shape=(14, 24, 35),
    )
    base.update(changes)
    return PlanConfig(**base)


def _lesion_case(lesion=(slice(6, 8), slice(14, 20), slice(12, 18))):
    """An anisotropic, oblique image: a body box of 1.0 inside zeros (so preprocessing crops) holding a 3.0 lesion."""
    array = np.zeros((12, 40, 36), dtype=np.float32)
    array[2:11, 5:35, 4:32] = 1.0
    array[lesion] = 3.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.25, 0.8, 3.0))  # (x, y, z): array (D, H, W) spacing (3.0, 0.8, 1.25)
    angle = np.deg2rad(15)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    image.SetOrigin((-20.0, 14.5, 3.0))
    truth = np.zeros(array.shape, dtype=np.uint8)
    truth[lesion] = 1
    return image, truth


def _box_of(mask):
    """Inclusive (x, y, z) index bounds of a (D, H, W) mask."""
    idx = np.argwhere(mask)
    return idx.min(0)[::-1].tolist(), idx.max(0)[::-1].tolist()


def test_instance_map_is_restored_to_the_cropped_anisotropic_input():
    image, truth = _lesion_case()
    label = sitk.GetImageFromArray(truth * LESION)
    label.CopyInformation(image)
    _, seg, properties = preprocess_case([image], label, _plan())
    assert properties["crop_bbox"] != [[0, s] for s in properties["original_shape"]]  # really cropped
    lesion = seg == LESION
    lo, hi = np.argwhere(lesion).min(0), np.argwhere(lesion).max(0) + 1
    # A tiny second instance on a preprocessed D slice that no input voxel samples (1.5x finer in D).
    sampled = nearest_indices(lesion.shape[0], properties["shape_after_crop"][0])
    unsampled = sorted(set(range(lesion.shape[0])) - set(sampled.tolist()))
    tiny = np.zeros_like(lesion)
    tiny[unsampled[0], 1, 1] = True
    assert not (tiny & lesion).any()
    label_map = np.where(lesion, 1, 0).astype(np.int32)
    label_map[tiny] = 2
    merged = MergedInstances(
        label_map,
        [
            Instance(1, LESION, 0.93, 7, box=np.concatenate([lo, hi]).astype(np.float64)),  # head box = mask box
            Instance(2, LESION, 0.6, 8, box=None),
        ],
    )
    out, infos, boxes = restore_instances(merged, properties, list(LABELS))
    assert out.GetSize() == image.GetSize() and out.GetPixelID() == sitk.sitkUInt16
    np.testing.assert_allclose(out.GetSpacing(), image.GetSpacing())
    np.testing.assert_allclose(out.GetOrigin(), image.GetOrigin())
    np.testing.assert_allclose(out.GetDirection(), image.GetDirection())
    ids = sitk.GetArrayFromImage(out)
    np.testing.assert_array_equal(ids, truth)  # nearest-neighbour there and back: exactly the input's lesion
    assert len(infos) == 1  # the tiny instance reached no input voxel: left out
    info = infos[0]
    assert (info.id, info.class_name, info.label_value, info.score, info.query) == (1, "lesion", LESION, 0.93, 7)
    assert info.voxel_count == truth.sum() == 72
    assert info.volume_ml == pytest.approx(72 * 3.0 * 0.8 * 1.25 / 1000)
    mask_box, head_box = boxes
    assert (mask_box.source, head_box.source, mask_box.instance, head_box.instance) == ("mask", "head", 1, 1)
    assert [mask_box.index_min, mask_box.index_max] == list(_box_of(truth))
    centre = [(a + b) / 2 for a, b in zip(mask_box.index_min, mask_box.index_max)]
    np.testing.assert_allclose(mask_box.center_lps, image.TransformContinuousIndexToPhysicalPoint(centre))
    np.testing.assert_allclose(mask_box.size_mm, [6 * 1.25, 6 * 0.8, 2 * 3.0])
    # The head box equal to the mask's box comes out as the mask box, within a voxel.
    spacing = np.asarray(image.GetSpacing())
    assert np.abs(np.subtract(head_box.index_min, mask_box.index_min)).max() <= 1
    assert np.abs(np.subtract(head_box.index_max, mask_box.index_max)).max() <= 1
    np.testing.assert_array_less(np.abs(np.subtract(head_box.size_mm, mask_box.size_mm)), spacing + 1e-6)
    assert np.linalg.norm(np.subtract(head_box.center_lps, mask_box.center_lps)) <= np.linalg.norm(spacing) / 2


# ----------------------------------------------------------------------------- predictor, summary, files
class LesionStub(torch.nn.Module):
    """A stand-in network with a box head and a case task: query 2 segments intensities above 2 as a lesion,
    its box is the box around those voxels, its score is highest in the tile that centres the lesion;
    ``lesion_count`` says ``one`` in tiles holding lesion voxels."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> MaskMedOutput:
        B, _, d, h, w = x.shape
        v = x[:, 0]
        masks = torch.stack([10 * (0.5 - v), 10 * torch.minimum(v - 0.5, 2.0 - v), 10 * (v - 2.0)], 1)
        cls = torch.full((B, 3, 4), -8.0)
        cls[:, 0, 0] = cls[:, 1, 1] = 8.0
        boxes = torch.zeros(B, 3, 6)
        case = torch.zeros(B, 2)
        size = torch.tensor([d, h, w], dtype=torch.float32)
        for b in range(B):
            idx = torch.nonzero(v[b] > 2.0).float()
            if len(idx) == 0:
                cls[b, 2, 3], case[b, 0] = 8.0, 2.0
                continue
            lo, hi = idx.min(0).values, idx.max(0).values + 1
            boxes[b, 2] = torch.cat([(lo + hi) / 2 / size, (hi - lo) / size])
            off_centre = float((((lo + hi) / 2 - size / 2) / size).abs().sum())
            cls[b, 2, 2], cls[b, 2, 3], case[b, 1] = 6.0 - 4.0 * off_centre, 3.0, 2.0
        return MaskMedOutput(
            class_logits=cls,
            mask_logits=[masks],
            stage_class_logits=[cls],
            class_embeddings=torch.zeros(B, 3, 4),
            mask_embeddings=torch.zeros(B, 3, 4),
            decoupled=True,
            boxes=boxes,
            case_logits=(case,),
        )


def _checkpoint(plan, **model_options) -> Checkpoint:
    torch.manual_seed(0)
    cfg = plan.model_config("tiny", **model_options)
    return Checkpoint(cfg, plan, list(plan.labels), build_model(cfg).state_dict())


@pytest.mark.parametrize("tta", [False, True])
def test_predictor_instances_boxes_and_case_classes(tta):
    plan = _plan()
    ckpt = _checkpoint(plan, instance_classes=(LESION,), box_head=True, case_tasks=[["lesion_count", ["none", "one"]]])
    predictor = Predictor(ckpt, device="cpu", tta=tta, reuse_constant_tiles=False)
    predictor.model = LesionStub()  # boxes and case logits whatever the real head supports yet
    image, truth = _lesion_case()
    result = predictor.predict(image)
    ids = sitk.GetArrayFromImage(result.instance_map)
    assert [i.id for i in result.instances] == [1] and set(np.unique(ids)) == {0, 1}
    assert 2 * np.logical_and(ids == 1, truth).sum() / (ids.astype(bool).sum() + truth.sum()) > 0.9
    mask_box, head_box = result.boxes
    assert (mask_box.source, head_box.source) == ("mask", "head")
    assert np.abs(np.subtract(mask_box.index_min, _box_of(truth)[0])).max() <= 1
    assert np.abs(np.subtract(head_box.index_min, mask_box.index_min)).max() <= 1
    assert np.abs(np.subtract(head_box.index_max, mask_box.index_max)).max() <= 1
    # Mean softmax over every tile (and mirror pass: a flip keeps the lesion in the tile).
    array, _, _ = preprocess_case([image], None, plan)
    tiles = tile_positions(array.shape[1:], plan.patch_size, 0.5)
    with_lesion = sum(bool((array[0][sl] > 2.0).any()) for sl in tiles)
    one = torch.tensor([0.0, 2.0]).softmax(0)[1].item()
    expected = (with_lesion * one + (len(tiles) - with_lesion) * (1 - one)) / len(tiles)
    task = result.case_classification["lesion_count"]
    assert task.probabilities["one"] == pytest.approx(expected, rel=1e-5)
    assert task.predicted == ("one" if expected > 0.5 else "none")
    summary = result.summary()
    assert summary["case_classification"]["lesion_count"]["probabilities"]["one"] == pytest.approx(expected, 1e-5)
    assert summary["boxes"][1]["source"] == "head"


def test_summary_keys_only_for_models_that_predict_them(quick_run, tmp_path):
    image, _ = _lesion_case()
    plain = Predictor.from_checkpoint(quick_run, device="cpu").predict(image)
    assert plain.instances is None and plain.instance_map is None and plain.case_classification is None
    assert not {"instances", "boxes", "case_classification"} & set(plain.summary())
    written = plain.write(tmp_path / "plain", "case")
    assert "instances" not in written and not (tmp_path / "plain" / "case_instances.nii.gz").exists()

    plan = _plan()
    path = tmp_path / "instances.pt"
    cfg = plan.model_config("tiny", instance_classes=(LESION,))
    torch.manual_seed(0)
    save_checkpoint(path, model=build_model(cfg), model_config=cfg, plan=plan)
    predictor = Predictor.from_checkpoint(path, device="cpu")
    result = predictor.predict(image, instance_threshold=0.05)  # an untrained network: a low threshold
    summary = json.loads(json.dumps(result.summary()))
    assert {"instances", "boxes"} <= set(summary) and "case_classification" not in summary
    ids = sitk.GetArrayFromImage(result.instance_map)
    assert sorted(np.unique(ids[ids > 0]).tolist()) == [i["id"] for i in summary["instances"]]
    for entry in summary["instances"]:
        assert set(entry) == {"id", "class_name", "label_value", "score", "volume_ml", "voxel_count", "query"}
        assert entry["voxel_count"] == int((ids == entry["id"]).sum()) > 0 and entry["score"] >= 0.05
    assert [b["source"] for b in summary["boxes"]] == ["mask"] * len(summary["instances"])  # no box head
    with pytest.raises(ConfigError, match="instance threshold"):
        predictor.predict(image, instance_threshold=0.0)


def test_box_head_end_to_end_with_the_real_head():
    """A real network with a box head and a case task through ``Predictor`` (waits for the head to have them)."""
    plan = _plan()
    options = dict(instance_classes=(LESION,), box_head=True, case_tasks=[["lesion_count", ["none", "one"]]])
    ckpt = _checkpoint(plan, **options)
    with torch.no_grad():
        probe = ckpt.build_model()(torch.zeros(1, 1, *plan.patch_size))
    if probe.boxes is None or not probe.case_logits:
        pytest.skip("the head does not predict boxes and case logits yet")
    image, _ = _lesion_case()
    result = Predictor(ckpt, device="cpu").predict(image, instance_threshold=0.05)
    assert set(result.case_classification) == {"lesion_count"}
    assert sum(result.case_classification["lesion_count"].probabilities.values()) == pytest.approx(1.0, rel=1e-5)
    heads = [b for b in result.boxes if b.source == "head"]
    assert len(heads) == len(result.instances) and all(len(b.index_min) == 3 for b in heads)


def _instance_prediction(ids: np.ndarray) -> Prediction:
    image, _ = _lesion_case()
    labels = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(image)
    instance_map = sitk.GetImageFromArray(ids.astype(np.uint16))
    instance_map.CopyInformation(image)
    return Prediction(
        labels=labels,
        label_names=list(LABELS),
        queries=[],
        class_volumes_ml={},
        class_embeddings=np.zeros((0, 1)),
        mask_embeddings=np.zeros((0, 1)),
        class_probabilities=np.zeros((0, 4)),
        instances=[],
        instance_map=instance_map,
        boxes=[],
    )


def test_instance_map_is_written_atomically(tmp_path, monkeypatch):
    ids = np.zeros((12, 40, 36), dtype=np.uint16)
    ids[5:7, 10:14, 10:14] = 1
    written = _instance_prediction(ids).write(tmp_path, "case", ".nrrd")
    assert written["instances"] == tmp_path / "case_instances.nrrd"
    back = sitk.ReadImage(str(written["instances"]))
    assert back.GetPixelID() == sitk.sitkUInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), ids)
    assert json.loads(written["summary"].read_text())["instances"] == []
    before = written["instances"].read_bytes()

    real_write = sitk.WriteImage

    def fail_on_instances(image, path, *args, **kwargs):
        if "case_instances" in str(path):
            real_write(image, path, *args, **kwargs)  # a whole temp file, then the failure
            raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: disk full")
        return real_write(image, path, *args, **kwargs)

    monkeypatch.setattr(sitk, "WriteImage", fail_on_instances)
    with pytest.raises(Exception, match="case_instances"):
        _instance_prediction(ids * 2).write(tmp_path, "case", ".nrrd")
    assert written["instances"].read_bytes() == before  # the previous file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nrrd", "case_instances.nrrd", "case_summary.json"]


def test_collector_keeps_one_result_per_tile_and_pass():
    """Tiles predicted again after an out-of-memory error replace their first results; overlapping tiles
    seeing one lesion give one instance."""
    collector = TileOutputCollector((LESION,), (("lesion_count", ("none", "one")),), 0.5)
    lesion = torch.ones(2, 1, 8, 8, 8)
    lesion[:, :, 4:] = 3.0  # every tile: a lesion in its deeper half
    two = TilePass(((0, 0, 0), (0, 0, 4)), (0, 0, 0), (8, 8, 16), (), 0, 1)  # overlapping by 4 along W
    for _ in range(2):
        collector.add(LesionStub()(lesion), two)
    collector.add(LesionStub()(torch.ones(1, 1, 8, 8, 8)), TilePass(((0, 0, 8),), (0, 0, 0), (8, 8, 16), (), 0, 1))
    merged = collector.merged()
    assert len(merged.instances) == 1
    np.testing.assert_array_equal(np.argwhere(merged.label_map).min(0), [4, 0, 0])
    np.testing.assert_array_equal(np.argwhere(merged.label_map).max(0), [7, 7, 11])
    one = torch.tensor([0.0, 2.0]).softmax(0)[1].item()
    task = collector.case_classification()["lesion_count"]
    assert task.probabilities["one"] == pytest.approx((2 * one + (1 - one)) / 3, rel=1e-6)


def test_predict_command_prints_instances(tmp_path, capsys):
    plan = _plan()
    cfg = plan.model_config("tiny", instance_classes=(LESION,))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", model=build_model(cfg), model_config=cfg, plan=plan)
    image, _ = _lesion_case()
    sitk.WriteImage(image, str(tmp_path / "case_0000.nii.gz"))
    args = [
        "predict",
        "-m",
        str(tmp_path / "m.pt"),
        "-i",
        str(tmp_path / "case_0000.nii.gz"),
        "-o",
        str(tmp_path / "o"),
    ]
    args += ["--device", "cpu", "--progress", "none"]
    assert main([*args, "--instance-threshold", "1.5"]) == 2
    assert "--instance-threshold must be in (0, 1], got 1.5" in capsys.readouterr().err
    assert main([*args, "--instance-threshold", "0.05"]) == 0
    err = capsys.readouterr().err
    summary = json.loads((tmp_path / "o" / "case_summary.json").read_text())
    n = len(summary["instances"])
    assert f"{n} instance{'s' if n != 1 else ''}" in err
    assert (tmp_path / "o" / "case_instances.nii.gz").is_file()
