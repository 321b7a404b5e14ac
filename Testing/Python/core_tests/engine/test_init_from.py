"""``--init-from``: a MaskMed run started from a trained nnU-Net v2 model or MaskMed run (real trainer, phantom
data, nnU-Net result folders written here the way nnU-Net writes them)."""

import json

import pytest
import torch
from nnunet_result_builders import plans_json, write_result_folder
from pipeline_helpers import PHANTOM_PATCH, quick_training_config

from MaskMedCore.cli import main
from MaskMedCore.config import PlanConfig
from MaskMedCore.engine.checkpoint import load_checkpoint
from MaskMedCore.engine.distributed import DistributedContext
from MaskMedCore.engine.init_from import model_config_for_source, plan_for_source, read_init_source
from MaskMedCore.engine.init_weights import initial_state
from MaskMedCore.engine.train_setup import prepare_plan
from MaskMedCore.engine.trainer import train
from MaskMedCore.errors import ConfigError
from MaskMedCore.models.build import build_model
from MaskMedCore.models.outputs import semantic_probs
from MaskMedCore.nnunet.checkpoint import load_nnunet_checkpoint
from MaskMedCore.nnunet.weights import maskmed_to_nnunet_state, nnunet_to_maskmed_state

PHANTOM_LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney_left": 3, "kidney_right": 4, "aorta": 5}
PHANTOM_SPACING = (4.0, 3.0, 3.0)  # the phantoms' spacing = their plan's target spacing
# A topology unlike the MaskMed plan's (4 stages of 3x3x3, 2 convs each): the run must take this one.
FEATURES = (4, 8, 16)
KERNELS = ((1, 3, 3), (3, 3, 3), (3, 3, 3))
STRIDES = ((1, 1, 1), (1, 2, 2), (2, 2, 2))
BACKBONE = ("encoder.", "decoder.")


def _in_order(values, order):
    return [values[i] for i in order]


def write_nnunet_folder(root, *, labels=PHANTOM_LABELS, spacing=PHANTOM_SPACING, transpose_forward=(0, 1, 2), seed=0):
    """An nnU-Net v2 result folder for the phantoms (``nnunet_result_builders``' plans with this test's CT channel,
    spacing, patch and FEATURES/KERNELS/STRIDES network, stored in nnU-Net's transposed order) and a
    ``fold_0/checkpoint_final.pth`` with real weights; returns (folder, ``x -> logits`` of the network on MaskMed's
    untransposed input).

    The weights are those of dynamic-network-architectures' PlainConvUNet when it is installed (what nnU-Net
    saves), else of MaskMed's point-wise UNet renamed by ``maskmed_to_nnunet_state`` (the same network).
    """
    tf = list(transpose_forward)
    tb = [tf.index(i) for i in range(3)]
    plans = plans_json("Dataset999_Phantom", spacing=_in_order(spacing, tf))
    plans["transpose_forward"], plans["transpose_backward"] = tf, tb
    config = plans["configurations"]["3d_fullres"]
    config.update(batch_size=3, patch_size=_in_order(PHANTOM_PATCH, tf), normalization_schemes=["CTNormalization"])
    arch = config["architecture"]["arch_kwargs"]
    arch.update(
        n_stages=len(FEATURES),
        features_per_stage=list(FEATURES),
        kernel_sizes=[_in_order(k, tf) for k in KERNELS],
        strides=[_in_order(s, tf) for s in STRIDES],
        n_conv_per_stage=[1] * len(FEATURES),
        n_conv_per_stage_decoder=[1] * (len(FEATURES) - 1),
    )
    torch.manual_seed(seed)
    try:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet

        blocks = dict(conv_op=torch.nn.Conv3d, norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU)
        kwargs = {k: v for k, v in arch.items() if k not in (*blocks, "dropout_op")}
        net = PlainConvUNet(1, num_classes=len(labels), deep_supervision=False, **blocks, **kwargs)
        reference, maskmed_names = net, False
    except ImportError:
        from MaskMedCore.config import ModelConfig

        cfg = ModelConfig(
            in_channels=1,
            num_classes=len(labels),
            features_per_stage=FEATURES,
            kernel_sizes=arch["kernel_sizes"],
            strides=arch["strides"],
            n_conv_per_stage=1,
            n_conv_per_stage_decoder=1,
            head="pointwise",
            bridge="none",
            masked_attention=False,
            deep_supervision=False,
        )
        net = build_model(cfg)
        reference, maskmed_names = (lambda x: net(x).mask_logits[-1]), True  # the point-wise head's logits
    with torch.no_grad():  # norm weights away from 1/0, so a norm/conv mix-up cannot go unnoticed
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    folder = write_result_folder(
        root, "Dataset999_Phantom", plans=plans, labels=labels, dataset_fields={"channel_names": {"0": "CT"}}
    )
    weights = maskmed_to_nnunet_state(net.state_dict()) if maskmed_names else net.state_dict()
    checkpoint = {
        "network_weights": weights,
        "trainer_name": "nnUNetTrainer",
        "current_epoch": 3,
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")

    def logits(x):
        """x: (B, 1, D, H, W) -> (B, K, D, H, W) logits of the network, run in nnU-Net's transposed grid."""
        y = reference(x.permute(0, 1, *(2 + a for a in tf)))
        return y.permute(0, 1, *(2 + a for a in tb))

    return folder, logits


@pytest.fixture(scope="module")
def prep(tmp_path_factory, phantom_dataset):
    """The phantoms' preprocessed cache (target spacing 4 x 3 x 3 mm), shared by this module's runs."""
    folder = tmp_path_factory.mktemp("init_prep")
    prepare_plan(phantom_dataset, folder, DistributedContext(), PHANTOM_PATCH, progress=False, configuration="3d_cpu")
    return folder


@pytest.fixture(scope="module")
def nnunet_folder(tmp_path_factory):
    return write_nnunet_folder(tmp_path_factory.mktemp("nnunet"))[0]


def _source_unet(folder):
    state = nnunet_to_maskmed_state(load_nnunet_checkpoint(folder / "fold_0" / "checkpoint_final.pth").network_weights)
    return {k: v for k, v in state.items() if k.startswith(BACKBONE)}


def _events(run, name):
    return [e for e in map(json.loads, (run / "train.log").read_text().splitlines()) if e["event"] == name]


@pytest.mark.parametrize("transpose_forward", [(0, 1, 2), (2, 0, 1)])
def test_nnunet_weights_give_the_nnunet_network_also_from_transposed_plans(tmp_path, prep, transpose_forward):
    """With the point-wise head every tensor loads and MaskMed's network computes nnU-Net's on the untransposed grid."""
    folder, reference = write_nnunet_folder(tmp_path, transpose_forward=transpose_forward)
    source = read_init_source(folder)
    assert source.patch_size == PHANTOM_PATCH and source.target_spacing == PHANTOM_SPACING
    assert source.topology["kernel_sizes"] == KERNELS and source.topology["strides"] == STRIDES
    plan = plan_for_source(PlanConfig.from_json((prep / "plan_cpu.json").read_text()), source, prep / "plan_cpu.json")
    overrides = {"head": "pointwise", "bridge": "none", "masked_attention": False}
    cfg = model_config_for_source(plan, "tiny", overrides, source).replace(deep_supervision=False)
    model = build_model(cfg).eval()
    state, report = initial_state(model.state_dict(), source.state, source.description, cfg.head)
    model.load_state_dict(state)
    assert not report.new and not report.skipped and len(report.loaded) == len(state)
    x = torch.randn(2, 1, *PHANTOM_PATCH)
    with torch.no_grad():
        ours = semantic_probs(model(x))
        theirs = torch.softmax(reference(x), 1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_upgrade_run_takes_the_nnunet_unet_freezes_it_then_trains_it_and_resumes(
    tmp_path, phantom_dataset, prep, nnunet_folder
):
    """Three pieces of one run (stopped twice, resumed twice): frozen for 4 of 6 iterations, across an epoch end
    and a resume, then trained."""
    run, source = tmp_path / "run", _source_unet(nnunet_folder)
    cfg = quick_training_config(epochs=2, iterations_per_epoch=3, init_from=str(nnunet_folder), augment=False)
    cfg = cfg.replace(freeze_backbone_iterations=4)

    def stop_after(n):
        calls = {"n": 0}

        def cancel():
            calls["n"] += 1
            return calls["n"] >= n

        return cancel

    def unet_is_the_source():
        state = load_checkpoint(run / "checkpoint_latest.pt").model_state
        return [k for k, v in source.items() if not torch.equal(state[k], v)] == []

    first = train(phantom_dataset, run, cfg, preprocessed_dir=prep, progress="none", cancel=stop_after(2))
    assert first.iterations_done == 2 and unet_is_the_source()
    ckpt = load_checkpoint(run / "checkpoint_latest.pt")
    # The network and plan are the source's UNet with MaskMed's decoupled head and FSAD bridge on top.
    mc = ckpt.model_config
    assert (mc.features_per_stage, mc.kernel_sizes, mc.strides) == (FEATURES, KERNELS, STRIDES)
    assert (mc.n_conv_per_stage, mc.n_conv_per_stage_decoder, mc.head, mc.bridge) == (1, 1, "decoupled", "fsad")
    assert (ckpt.plan.patch_size, ckpt.plan.batch_size) == (PHANTOM_PATCH, 3)
    assert set(source) == {k for k in ckpt.model_state if k.startswith(BACKBONE)}
    assert set(first.init_report.loaded) == set(source)
    assert set(first.init_report.new) == {k for k in ckpt.model_state if not k.startswith(BACKBONE)}
    (init,) = _events(run, "init")
    assert init["loaded"] == len(source) and init["loaded_modules"] == ["encoder", "decoder"]
    assert set(init["skipped"]) == {f"head.seg_layers.{i}.{p}" for i in range(2) for p in ("weight", "bias")}
    assert "no such layer" in init["skipped"]["head.seg_layers.0.weight"]
    saved = json.loads((run / "training_config.json").read_text())
    recorded = (saved["init_from"], saved["init_fold"], saved["freeze_backbone_iterations"])
    assert recorded == (str(nnunet_folder.resolve()), "0", 4)

    # Resumed while frozen: still frozen up to iteration 4 (past an epoch end and a validation round) ...
    with pytest.raises(ConfigError, match="differs from the source this run started from"):
        train(phantom_dataset, run, cfg.replace(init_from=str(tmp_path)), preprocessed_dir=prep, resume=True)
    second = train(phantom_dataset, run, cfg, preprocessed_dir=prep, progress="none", resume=True, cancel=stop_after(2))
    assert second.iterations_done == 4 and second.init_report is None and unet_is_the_source()
    # ... then trained with the rest; no piece re-initialised.
    third = train(phantom_dataset, run, cfg, preprocessed_dir=prep, progress="none", resume=True)
    assert third.iterations_done == 6 and len(_events(run, "init")) == 1
    final = load_checkpoint(run / "checkpoint_latest.pt").model_state
    unchanged = [k for k, v in source.items() if torch.equal(final[k], v)]
    assert not unchanged, f"not trained after unfreezing: {unchanged}"
    frozen_notes = [e["text"] for e in _events(run, "message") if "frozen until iteration 4" in e["text"]]
    assert len(frozen_notes) == 2  # the first and the second piece started frozen


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": {**PHANTOM_LABELS, "liver": 2, "spleen": 1}}, "its labels .* differ from the dataset's"),
        ({"spacing": (2.0, 3.0, 3.0)}, r"target_spacing \[4.0, 3.0, 3.0\] mm .* differs from the --init-from model's"),
        ({"patch_size": (16, 16, 16)}, "--patch-size 16 16 16 conflicts with --init-from"),
        ({"set": {"features_per_stage": [8, 16, 32]}}, "--set features_per_stage=.* conflicts with --init-from"),
    ],
)
def test_a_source_that_does_not_fit_the_dataset_is_refused_naming_the_field(
    tmp_path, phantom_dataset, prep, change, message
):
    labels, spacing = change.get("labels", PHANTOM_LABELS), change.get("spacing", PHANTOM_SPACING)
    folder, _ = write_nnunet_folder(tmp_path / "src", labels=labels, spacing=spacing)
    cfg = quick_training_config(init_from=str(folder))
    with pytest.raises(ConfigError, match=message):
        train(
            phantom_dataset,
            tmp_path / "run",
            cfg,
            preprocessed_dir=prep,
            patch_size=change.get("patch_size"),
            model_overrides=change.get("set"),
            progress="none",
        )
    assert not (tmp_path / "run").exists()


def test_a_new_cache_is_planned_at_the_source_spacing(tmp_path, phantom_dataset):
    folder, _ = write_nnunet_folder(tmp_path / "src", spacing=(4.0, 2.5, 2.5))
    cfg = quick_training_config(epochs=1, iterations_per_epoch=1, init_from=str(folder), freeze_backbone_iterations=1)
    train(phantom_dataset, tmp_path / "run", cfg, preprocessed_dir=tmp_path / "prep", progress="none")
    assert PlanConfig.from_json((tmp_path / "prep" / "plan.json").read_text()).target_spacing == (4.0, 2.5, 2.5)
    assert load_checkpoint(tmp_path / "run" / "checkpoint_latest.pt").plan.target_spacing == (4.0, 2.5, 2.5)


def test_maskmed_run_source_loads_what_fits_and_reports_the_rest(tmp_path, phantom_dataset, prep, quick_run):
    """quick_run: a tiny decoupled MaskMed run with the FSAD bridge on the phantoms."""
    source = read_init_source(quick_run)
    assert source.kind == "maskmed" and source.weights_path.name == "checkpoint_latest.pt"
    plan = plan_for_source(PlanConfig.from_json((prep / "plan_cpu.json").read_text()), source, prep / "plan_cpu.json")
    # No bridge: encoder, decoder and head load; the bridge is skipped.
    cfg = model_config_for_source(plan, "tiny", {"bridge": "none"}, source)
    _, report = initial_state(build_model(cfg).state_dict(), source.state, source.description, cfg.head)
    assert not report.new and report.skipped and all(k.startswith("bridge.") for k in report.skipped)
    assert "the new network has none" in next(iter(report.skipped.values()))
    assert {k.split(".")[0] for k in report.loaded} == {"encoder", "decoder", "head"}
    # A narrower head: its tensors of another shape stay new, with the shapes named.
    cfg = model_config_for_source(plan, "tiny", {"head_dim": 16, "head_heads": 2}, source)
    _, report = initial_state(build_model(cfg).state_dict(), source.state, source.description, cfg.head)
    assert report.new and all(k.startswith("head.") for k in report.new)
    assert "in the source" in report.skipped[report.new[0]]
    # And a run started from it trains.
    run_cfg = quick_training_config(epochs=1, iterations_per_epoch=1, init_from=str(quick_run))
    result = train(phantom_dataset, tmp_path / "run", run_cfg, preprocessed_dir=prep, progress="none")
    assert result.iterations_done == 1 and not result.init_report.new


def test_freezing_needs_a_source():
    with pytest.raises(ConfigError, match="freeze_backbone_iterations is 5 but init_from is not set"):
        quick_training_config(freeze_backbone_iterations=5)


def test_cli_reports_what_it_loaded_as_a_json_event(tmp_path, capsys, phantom_dataset, prep, nnunet_folder):
    def argv(run, *extra):
        base = ["train", str(phantom_dataset), "--preset", "tiny", "--device", "cpu", "--workers", "0"]
        base += ["--preprocessed", str(prep), "--out", str(tmp_path / run), "--epochs", "1"]
        return [*base, "--iterations-per-epoch", "1", "--progress", "json", *extra]

    source = ["--init-from", str(nnunet_folder)]
    assert main(argv("run", *source, "--freeze-backbone-iterations", "1")) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (init,) = [e for e in events if e["event"] == "init"]
    assert init["loaded_modules"] == ["encoder", "decoder"] and init["new_modules"] == ["bridge", "head"]
    for extra, message in (
        (["--init-fold", "3"], "--init-fold 3 needs --init-from"),
        ([*source, "--init-fold", "3"], f"--init-fold 3: {nnunet_folder} has fold(s) 0"),
        ([*source, "--init-checkpoint", "best"], "fold_0/checkpoint_best.pth does not exist"),
    ):
        assert main(argv("bad", *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and not (tmp_path / "bad").exists()
