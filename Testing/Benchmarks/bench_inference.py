"""Benchmark: whole-volume inference of ``maskmed predict`` vs nnU-Net v2's ``nnUNetPredictor`` vs
MONAI's ``sliding_window_inference``.

Issue: "Whole-volume inference on a CT-sized volume (e.g. 512x512x200 at the plan's spacing): wall
time and peak RAM of ``maskmed predict`` vs ``nnUNetPredictor`` with the same network weights shape
and the same tile/overlap/TTA settings vs MONAI ``sliding_window_inference``. Target: ``maskmed
predict`` <= 1.2x ``nnUNetPredictor`` wall time and <= its peak RAM."

Every row segments the same synthetic CT volume (``MaskMedCore.data.phantom``, int16 HU) in a fresh
child process, with overlap 0.5, Gaussian tile weighting and the same mirroring-TTA flag (off in
``--quick``, on in full mode). The volume's spacing is the plan's spacing, so no predictor
resamples, and every row applies the same CT normalisation (clip to the foreground 0.5/99.5
percentiles, then z-score with the foreground mean/std), so the work differs only in the predictor
and the network:

1. MaskMed ``Predictor`` loaded from a MaskMed checkpoint file, paper network (decoupled head,
   masked attention, FSAD bridge) with random weights.
2. The same predictor on MaskMed's nnU-Net-equivalent network (point-wise head, no bridge): the
   same modules and parameter count as row 3's network, so rows 2 vs 3 isolate the predictors.
3. ``nnUNetPredictor`` on dynamic-network-architectures' ``PlainConvUNet`` of the same topology,
   loaded from an nnU-Net model folder (``initialize_from_trained_model_folder``), predicting with
   ``predict_single_npy_array`` so no worker processes are spawned and the peak RAM is in-process.
   nnU-Net predicts one tile per network call; MaskMed batches two.
4. MONAI ``sliding_window_inference`` + ``SwinUNETR(feature_size=48)``, two tiles per call, with
   mirroring TTA written by hand (MONAI has none built in), normalisation and argmax by hand.
5. MONAI ``sliding_window_inference`` + row 3's ``PlainConvUNet``: MONAI's inferer on the same network.

Timed per row: loading/building the predictor (``load s``) and, separately, the predict call from
the in-memory volume to the in-memory label map (``wall s``), with its peak RAM added over the state
before the call (``bench_harness.PeakMemory``; on CUDA also the peak GPU memory). Forward hooks on
the network count the tiles and time the network forward passes. The compared rows (1-3) run twice,
in reverse order the second time, and report their faster run: on a shared machine other jobs can
slow one run down by 2x, and the fastest run is the least disturbed. When a target is missed the
MaskMed predictor is profiled (cProfile cost centres, and the peak RAM reached in each phase).

    python Testing/Benchmarks/bench_inference.py [--quick | --standard] [--device auto|cpu|cuda] [--timeout S]
        [--no-markdown]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import math
import os
import pstats
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_harness as bh  # noqa: E402
import inference_peers as peers  # noqa: E402

SCRIPT = Path(__file__).resolve()
NAME = "inference"
SEED = 0
OVERLAP = 0.5
MONAI_SW_BATCH = 1  # MONAI's default sw_batch_size; MaskMed rows use the Predictor's default (1 on CPU, 2 on GPU)
WALL_TARGET = 1.2  # maskmed predict <= 1.2x nnUNetPredictor wall time (and <= its peak RAM)

# Volume (D, H, W) = (z, y, x), its spacing in mm (= the plan's target spacing) and the tile (d, h, w).
# Full mode is the issue's 512x512x200 CT with the paper's 128^3 tile and TTA. Quick mode fits every
# row (the compared ones twice) in ~3-4 min on 2 CPU cores, where one 64^3 tile of the plain network
# takes ~2 s: the paper topology (total stride 32) at its smallest sensible tile, 64^3, on a 96x96x64
# volume, i.e. 2x2 overlapping tiles in-plane; TTA off (it would multiply the work by 8).
# Standard mode (issue 14) is the whole-scan CPU row: the issue's 512x512x200 CT at the 128^3 tile, overlap
# 0.5, TTA off (8 passes would take ~8 h on 2 cores), only MaskMed vs nnU-Net, each row once (one 128^3 tile
# of the paper network takes ~10 s on 2 cores: ~1 h for the three rows) and a target of <= 1.0x.
ALL_ROWS = ("maskmed_paper", "maskmed_plain", "nnunet", "monai_swin", "monai_plain")
_CT = {"shape": (200, 512, 512), "spacing": (1.5, 0.8, 0.8), "tile": (128, 128, 128)}
MODES: dict[str, dict[str, Any]] = {
    "quick": {"shape": (64, 96, 96), "spacing": (1.5, 0.8, 0.8), "tile": (64, 64, 64), "tta": False},
    "full": {**_CT, "tta": True},
    "standard": {
        **_CT,
        "shape": (224, 512, 512),
        "input": "real_ct",
        "tta": False,
        "rows": ("nnunet", "maskmed_paper", "maskmed_plain"),
        "repeat": False,
        "wall_target": 1.0,
        "profile": False,
    },
}
MODES["standard-bf16"] = {**MODES["standard"], "rows": ("nnunet", "maskmed_paper_bf16")}
MODE_DEFAULTS = {"rows": ALL_ROWS, "repeat": True, "wall_target": WALL_TARGET, "profile": True}

# MaskMed model overrides that turn the paper network into nnU-Net's PlainConvUNet (ModelConfig's
# validation: masked attention needs the decoupled head with shared queries, so it must be off).
PLAIN_OVERRIDES = {"head": "pointwise", "bridge": "none", "masked_attention": False, "queries": "per_stage"}

# (key, row label, child kind, network description)
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("maskmed_paper", "MaskMed predict (paper network)", "maskmed", "MaskMed paper (decoupled head, FSAD bridge)"),
    ("maskmed_plain", "MaskMed predict (nnU-Net-equivalent network)", "maskmed", "MaskMed point-wise head, no bridge"),
    (
        "maskmed_paper_bf16",
        "MaskMed predict (paper network, --precision bf16)",
        "maskmed",
        "MaskMed paper, bfloat16 autocast",
    ),
    ("nnunet", "nnUNetPredictor", "nnunet", "PlainConvUNet"),
    ("monai_swin", "MONAI sliding_window_inference + SwinUNETR", "monai", "SwinUNETR (feature_size 48)"),
    ("monai_plain", "MONAI sliding_window_inference + PlainConvUNet", "monai", "PlainConvUNet"),
)
TARGET_ROWS = ("maskmed_paper", "maskmed_plain", "maskmed_paper_bf16")
COMPARED_ROWS = (*TARGET_ROWS, "nnunet")


# ---------------------------------------------------------------------------------------- children
class ForwardProbe:
    """Counts the samples (tiles, times mirror passes) a network sees and times its forward passes.

    Hooks on the top-level module, so every predictor is measured the same way whatever its loop
    looks like. On CUDA the forward time comes from CUDA events (no synchronisation in the loop,
    so the predictors' own overlap of host and device work is left intact).
    """

    def __init__(self, network: Any, device: str) -> None:
        import torch

        self._torch = torch
        self.cuda = device.startswith("cuda")
        self.samples = self.calls = 0
        self._seconds = 0.0
        self._start: Any = None
        self._events: list[tuple[Any, Any]] = []
        network.register_forward_pre_hook(self._before)
        network.register_forward_hook(self._after)

    def _now(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = self._torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _before(self, module: Any, args: tuple) -> None:
        self.samples += int(args[0].shape[0])
        self.calls += 1
        self._start = self._now()

    def _after(self, module: Any, args: tuple, output: Any) -> None:
        if self.cuda:
            self._events.append((self._start, self._now()))
        else:
            self._seconds += time.perf_counter() - self._start

    def seconds(self) -> float:
        if self.cuda:
            self._torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in self._events) / 1000
        return self._seconds


def _measure(predict: Callable[[], Any], network: Any, device: str, tta: bool) -> tuple[Any, dict[str, Any]]:
    """Run ``predict`` once; its result and wall time, peak RAM (and GPU memory), tiles, forward time.

    ``cpu_s`` is the CPU time of all the process's threads: on a machine shared with other jobs it
    grows far less than the wall time when the job is starved of cores, so it is the steadier
    measure of the work done (on CUDA it counts only the host side)."""
    probe = ForwardProbe(network, device)
    cuda = device.startswith("cuda")
    with bh.PeakMemory("cpu") as ram, bh.PeakMemory(device) if cuda else contextlib.nullcontext() as gpu:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = predict()
        bh.synchronize(device)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    passes = 8 if tta else 1
    stats = {
        "predict_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "forward_s": round(probe.seconds(), 3),
        "peak_ram_mib": round(ram.peak_mib, 1),
        "peak_gpu_mib": round(gpu.peak_mib, 1) if cuda else None,
        "tiles": probe.samples // passes,
        "network_calls": probe.calls,
        "tile_batch": math.ceil(probe.samples / max(probe.calls, 1)),
        "params": sum(p.numel() for p in network.parameters()),
    }
    return result, stats


def _sanity(labels: Any, shape: list[int], num_classes: int) -> dict[str, Any]:
    return {
        "output_shape": list(labels.shape),
        "shape_ok": list(labels.shape) == list(shape),
        "labels_ok": int(labels.max()) < num_classes,
    }


def _load_volume(volume: str) -> Any:
    import numpy as np

    return np.load(volume)  # (D, H, W) int16 HU


def run_maskmed(
    volume: str, spacing: list[float], tta: bool, device: str, checkpoint: str, precision: str = "auto", **_: Any
) -> dict:
    """Row 1/2: ``Predictor.from_checkpoint(...).predict(sitk_image)``, labels kept in memory."""
    import SimpleITK as sitk

    from MaskMedCore.inference.predictor import Predictor

    array = _load_volume(volume)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing)))  # SimpleITK order is (x, y, z)
    start = time.perf_counter()
    predictor = Predictor.from_checkpoint(checkpoint, device=device, overlap=OVERLAP, tta=tta, precision=precision)
    load_s = time.perf_counter() - start
    prediction, stats = _measure(lambda: predictor.predict(image), predictor.model, device, tta)
    labels = sitk.GetArrayFromImage(prediction.labels)
    return {
        "load_s": round(load_s, 3),
        **stats,
        "tiles_reused": predictor.tile_counts["reused"],
        **_sanity(labels, list(array.shape), predictor.plan.num_classes),
    }


def run_nnunet(volume: str, spacing: list[float], tta: bool, device: str, model_folder: str, **_: Any) -> dict:
    """Row 3: ``nnUNetPredictor`` from an nnU-Net model folder, ``predict_single_npy_array``."""
    import torch

    # nnU-Net caps torch's threads at nnUNet_def_n_proc (default 8) while predicting and exporting;
    # pin it to torch's default so every row uses the same number of threads on any machine.
    os.environ["nnUNet_def_n_proc"] = str(torch.get_num_threads())
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    array = _load_volume(volume)
    cuda = device.startswith("cuda")
    start = time.perf_counter()
    predictor = nnUNetPredictor(
        tile_step_size=1 - OVERLAP,
        use_gaussian=True,
        use_mirroring=tta,
        perform_everything_on_device=cuda,
        device=torch.device(device),
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(model_folder, use_folds=(0,))
    load_s = time.perf_counter() - start
    # (C, D, H, W) input and its (D, H, W) spacing, as nnU-Net's SimpleITKIO would return them.
    labels, stats = _measure(
        lambda: predictor.predict_single_npy_array(array[None], {"spacing": list(spacing)}),
        predictor.network,
        device,
        tta,
    )
    return {
        "load_s": round(load_s, 3),
        **stats,
        **_sanity(labels, list(array.shape), len(predictor.dataset_json["labels"])),
    }


def run_monai(
    volume: str,
    tile: list[int],
    tta: bool,
    device: str,
    network: str,
    num_classes: int,
    intensity: dict[str, float],
    architecture: dict | None = None,
    **_: Any,
) -> dict:
    """Row 4/5: MONAI ``sliding_window_inference``; the timed call includes the CT normalisation
    (the other predictors' preprocessing does it too) and the argmax."""
    import torch

    array = _load_volume(volume)
    start = time.perf_counter()
    torch.manual_seed(SEED)
    if network == "swinunetr":
        from monai.networks.nets import SwinUNETR

        net = SwinUNETR(in_channels=1, out_channels=num_classes, feature_size=48)  # monai 1.6.1 takes no img_size
    else:
        net = peers.build_plain_unet(architecture, 1, num_classes)
    net = peers.MirroredNetwork(net.to(device).eval(), mirror=tta)
    load_s = time.perf_counter() - start

    def predict() -> Any:
        x = torch.from_numpy(array).to(device=device, dtype=torch.float32)
        x = x.clamp_(intensity["percentile_00_5"], intensity["percentile_99_5"]).sub_(intensity["mean"])
        x = x.div_(intensity["std"])[None, None]  # (1, 1, D, H, W)
        return peers.monai_segment(net, x, tile, OVERLAP, MONAI_SW_BATCH).numpy()

    labels, stats = _measure(predict, net.net, device, tta)
    return {"load_s": round(load_s, 3), **stats, **_sanity(labels, list(array.shape), num_classes)}


# Cost centres of Predictor.predict: (name, [(file suffix, function), ...] whose cumulative time counts).
_CENTRES = (
    ("network forward", [("models/maskmed.py", "forward")]),
    ("class probabilities (semantic_probs)", [("models/outputs.py", "semantic_probs")]),
    ("query statistics", [("inference/query_summary.py", "to_device_mass"), ("inference/query_summary.py", "add")]),
    ("preprocessing (preprocess_case)", [("data/preprocessing.py", "preprocess_case")]),
    ("restore to the input grid (restore_labels)", [("data/preprocessing.py", "restore_labels")]),
)
_PHASES = (
    ("MaskMedCore.data.preprocessing", "preprocess_case"),
    ("MaskMedCore.inference.sliding_window", "sliding_window_predict"),
    ("MaskMedCore.data.preprocessing", "restore_labels"),
)


def _cumtime(stats: pstats.Stats, parts: list[tuple[str, str]]) -> float:
    raw = stats.stats  # type: ignore[attr-defined]  # {(file, line, func): (cc, nc, tottime, cumtime, callers)}
    return sum(v[3] for (f, _, fn), v in raw.items() for suffix, name in parts if f.endswith(suffix) and fn == name)


def _status_mib(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status``, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


@contextlib.contextmanager
def _phase_memory(peaks: dict[str, float]):
    """Record, per predictor phase, the peak RAM (MiB) above the state when the prediction started.

    The phase functions are looked up on their modules at call time by ``Predictor.predict``, so
    wrapping the module attributes (only inside this profiling child) sees every call.
    """
    import importlib

    base = _status_mib("VmRSS")
    originals = []
    for module_name, name in _PHASES:
        module = importlib.import_module(module_name)
        original = getattr(module, name)
        originals.append((module, name, original))

        def wrapper(*args: Any, _original=original, _name=name, **kwargs: Any) -> Any:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS, as PeakMemory does
            try:
                return _original(*args, **kwargs)
            finally:
                peaks[_name] = round(_status_mib("VmHWM") - base, 1)

        setattr(module, name, wrapper)
    try:
        yield
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


def _function_name(file: str, line: int, name: str) -> str:
    """Readable cProfile entry: ``torch.conv3d`` / ``Tensor.sum`` for C functions, ``file:line(name)`` otherwise."""
    if file != "~":
        return f"{Path(file).name}:{line}({name})"
    builtin = re.fullmatch(r"<built-in method (\S+)>", name)
    method = re.fullmatch(r"<method '(\w+)' of '[\w.]+' objects>", name)
    return builtin.group(1) if builtin else f"Tensor.{method.group(1)}" if method else name


def run_profile(volume: str, spacing: list[float], tta: bool, device: str, checkpoint: str, **_: Any) -> dict:
    """cProfile of one MaskMed ``Predictor.predict`` call, grouped into cost centres, plus the peak
    RAM each phase reaches (where the predict call's peak memory comes from)."""
    import SimpleITK as sitk

    from MaskMedCore.inference.predictor import Predictor

    image = sitk.GetImageFromArray(_load_volume(volume))
    image.SetSpacing(tuple(reversed(spacing)))
    predictor = Predictor.from_checkpoint(checkpoint, device=device, overlap=OVERLAP, tta=tta)
    peaks: dict[str, float] = {}
    profiler = cProfile.Profile()
    with _phase_memory(peaks):
        profiler.enable()
        predictor.predict(image)
        bh.synchronize(device)
        profiler.disable()
    stats = pstats.Stats(profiler)
    total = _cumtime(stats, [("inference/predictor.py", "predict")])
    centres = {name: _cumtime(stats, parts) for name, parts in _CENTRES}
    # Inside the sliding window but outside predict_fn: tile gathering, TTA flips/averaging,
    # Gaussian-weighted accumulation and the final division.
    window = _cumtime(stats, [("inference/sliding_window.py", "sliding_window_predict")])
    centres["tiling, TTA flips, Gaussian accumulation"] = window - _cumtime(
        stats, [("inference/predictor.py", "predict_fn")]
    )
    centres["other predict_fn work (autocast, dtype casts)"] = (
        _cumtime(stats, [("inference/predictor.py", "predict_fn")])
        - centres["network forward"]
        - centres["class probabilities (semantic_probs)"]
        - centres["query statistics"]
    )
    centres["rest (output image, summaries)"] = (
        total
        - window
        - sum(
            centres[name] for name in ("preprocessing (preprocess_case)", "restore to the input grid (restore_labels)")
        )
    )
    raw = stats.stats  # type: ignore[attr-defined]
    top = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:10]
    return {
        "total_s": round(total, 3),
        "centres": [
            {"name": name, "seconds": round(sec, 3), "percent": round(100 * sec / total, 1)}
            for name, sec in sorted(centres.items(), key=lambda kv: -kv[1])
        ],
        "top_tottime": [
            {"function": _function_name(f, line, fn), "tottime_s": round(v[2], 3), "calls": v[1]}
            for (f, line, fn), v in top
        ],
        "phase_peak_ram_mib": peaks,
    }


HANDLERS = {"maskmed": run_maskmed, "nnunet": run_nnunet, "monai": run_monai, "profile": run_profile}


# ---------------------------------------------------------------------------------------- parent
def prepare(workdir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Write the shared input and the three models into ``workdir``; the children's common kwargs.

    - ``volume.npy``: the phantom CT, (D, H, W) int16 HU;
    - the CT normalisation numbers, from the phantom's labelled foreground (nnU-Net's fingerprint);
    - ``maskmed_paper.pt`` / ``maskmed_plain.pt``: MaskMed checkpoints (random init) whose plan has
      the volume's spacing and the tile as patch;
    - ``nnunet/``: an nnU-Net model folder with the plain network's topology.
    """
    import numpy as np
    import SimpleITK as sitk
    import torch

    from MaskMedCore.config.model_config import ModelConfig
    from MaskMedCore.config.plan_config import PlanConfig
    from MaskMedCore.data.phantom import PHANTOM_LABELS, generate_phantom
    from MaskMedCore.engine.checkpoint import save_checkpoint
    from MaskMedCore.models.build import build_model

    shape, spacing, tile = settings["shape"], settings["spacing"], settings["tile"]
    if settings.get("input") == "real_ct":
        from whole_scan_ct import whole_scan_ct

        array, label_array = whole_scan_ct(shape, spacing)
        foreground = array[label_array > 0].astype(np.float64)
        del label_array
    else:
        image, labels = generate_phantom(SEED, shape, spacing)
        array = sitk.GetArrayFromImage(image)
        foreground = array[sitk.GetArrayViewFromImage(labels) > 0].astype(np.float64)
        del image, labels
    intensity = {
        "mean": float(foreground.mean()),
        "std": float(foreground.std()),
        "median": float(np.median(foreground)),
        "min": float(foreground.min()),
        "max": float(foreground.max()),
        "percentile_00_5": float(np.percentile(foreground, 0.5)),
        "percentile_99_5": float(np.percentile(foreground, 99.5)),
    }
    np.save(workdir / "volume.npy", array)
    del array, foreground

    common = {
        "spacing": list(spacing),
        "tile": list(tile),
        "tta": settings["tta"],
        "volume": str(workdir / "volume.npy"),
    }
    kwargs: dict[str, dict[str, Any]] = {}
    configs = {
        key: ModelConfig.preset("paper", in_channels=1, num_classes=len(PHANTOM_LABELS), **overrides)
        for key, overrides in (("maskmed_paper", {}), ("maskmed_plain", PLAIN_OVERRIDES))
    }
    for key, cfg in configs.items():
        cfg.check_input_shape(tile)
        plan = PlanConfig(
            dataset_name="BenchInference",
            channel_names=("CT",),
            labels=PHANTOM_LABELS,
            file_ending=".nii.gz",
            normalization=(
                {
                    "scheme": "ct",
                    "mean": intensity["mean"],
                    "std": intensity["std"],
                    "lower": intensity["percentile_00_5"],
                    "upper": intensity["percentile_99_5"],
                },
            ),
            target_spacing=spacing,
            patch_size=tile,
            batch_size=2,
            features_per_stage=cfg.features_per_stage,
            kernel_sizes=cfg.kernel_sizes,
            strides=cfg.strides,
            median_shape=shape,
        )
        torch.manual_seed(SEED)
        path = workdir / f"{key}.pt"
        save_checkpoint(path, model=build_model(cfg), model_config=cfg, plan=plan)
        kwargs[key] = {**common, "checkpoint": str(path)}
    kwargs["maskmed_paper_bf16"] = {**kwargs["maskmed_paper"], "precision": "bf16"}
    plain = configs["maskmed_plain"]
    architecture = peers.nnunet_architecture(
        plain.features_per_stage,
        plain.kernel_sizes,
        plain.strides,
        plain.n_conv_per_stage,
        plain.n_conv_per_stage_decoder,
    )
    peers.write_nnunet_model_folder(
        workdir / "nnunet",
        architecture=architecture,
        labels=PHANTOM_LABELS,
        patch_size=tile,
        spacing=spacing,
        median_shape=shape,
        intensity=intensity,
        seed=SEED,
    )
    kwargs["nnunet"] = {**common, "model_folder": str(workdir / "nnunet")}
    monai = {**common, "num_classes": len(PHANTOM_LABELS), "intensity": intensity}
    kwargs["monai_swin"] = {**monai, "network": "swinunetr"}
    kwargs["monai_plain"] = {**monai, "network": "plainconvunet", "architecture": architecture}
    return {"intensity": intensity, "num_classes": len(PHANTOM_LABELS), "kwargs": kwargs}


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b > 0:
        return float("nan")
    return a / b


def evaluate_targets(rows: dict[str, dict[str, Any]], wall_target: float = WALL_TARGET) -> dict[str, dict[str, Any]]:
    """Wall time and peak RAM of rows 1 and 2 against nnUNetPredictor (None: a row failed)."""
    ref = rows["nnunet"]
    out = {}
    for key in TARGET_ROWS:
        if key not in rows:
            continue
        row = rows[key]
        ok = "error" not in row and "error" not in ref
        wall, ram = (
            _ratio(row.get("predict_s"), ref.get("predict_s")),
            _ratio(row.get("peak_ram_mib"), ref.get("peak_ram_mib")),
        )
        out[key] = {
            "wall_ratio": round(wall, 3),
            "wall_target": wall_target,
            "wall_met": (wall <= wall_target) if ok else None,
            "ram_ratio": round(ram, 3),
            "cpu_ratio": round(_ratio(row.get("cpu_s"), ref.get("cpu_s")), 3),
            "ram_met": (row["peak_ram_mib"] <= ref["peak_ram_mib"]) if ok else None,
        }
    return out


def _fmt_pct(ratio: float) -> str:
    return f"{100 * (ratio - 1):+.0f} %"


def interpretation(payload: dict[str, Any]) -> str:
    """One paragraph read off the measured numbers (no claims the numbers do not carry)."""
    rows = {r["key"]: r for r in payload["rows"]}
    if "maskmed_plain" not in rows or "maskmed_paper" not in rows:
        return (
            " ".join(
                f"{r['row']}: {r['predict_s']:.0f} s wall, {r['forward_s']:.0f} s of network forward passes over "
                f"{r['tiles']} tiles ({r['forward_s'] / max(r['tiles'], 1):.2f} s per tile), {r['cpu_s']:.0f} CPU s."
                for r in rows.values()
                if "error" not in r
            )
            + " Each row ran once (cold), nnU-Net's first."
        )
    paper, plain, nn = rows["maskmed_paper"], rows["maskmed_plain"], rows["nnunet"]
    swin = rows.get("monai_swin", {"error": "not run in this mode"})
    if any("error" in r for r in (paper, plain, nn)):
        return "A MaskMed or nnU-Net row failed (see the table), so the predictors cannot be compared."
    K, device = payload["num_classes"], payload["device"]
    voxels = math.prod(payload["settings"]["shape"])
    acc_maskmed = (K + 1) * voxels * 4 / 2**20  # float32 class sums + weight sum, on the CPU
    acc_nnunet = (K + 1) * voxels * 2 / 2**20  # float16, on the predictor's device
    per_tile = [r["forward_s"] / max(r["tiles"], 1) for r in (plain, nn)]
    text = (
        f"On the same network, MaskMed's predictor takes {plain['predict_s']:.1f} s and nnU-Net's "
        f"{nn['predict_s']:.1f} s, of which the network forward passes are {plain['forward_s']:.1f} s and "
        f"{nn['forward_s']:.1f} s ({per_tile[0]:.2f} vs {per_tile[1]:.2f} s per tile at {plain['tile_batch']} vs "
        f"{nn['tile_batch']} tiles per call); everything else (preprocessing, tiling, blending, return to the "
        f"input grid) is {plain['predict_s'] - plain['forward_s']:.1f} s vs {nn['predict_s'] - nn['forward_s']:.1f} s. "
        f"In CPU time, less disturbed by other jobs, MaskMed needs {_ratio(plain['cpu_s'], nn['cpu_s']):.2f}x "
        f"nnU-Net's on this network and {_ratio(paper['cpu_s'], nn['cpu_s']):.2f}x with the paper network. "
        f"The paper network's forward passes take {_ratio(paper['forward_s'], plain['forward_s']):.2f}x the plain "
        f"one's (FSAD bridge and masked-attention transformer head). "
        f"Peak RAM: MaskMed's float32 accumulators are {acc_maskmed:,.0f} MiB of its {plain['peak_ram_mib']:,.0f} MiB "
        f"(nnU-Net's float16 ones {acc_nnunet:,.0f} MiB, "
        f"{'in RAM' if device == 'cpu' else 'in GPU memory'}, of {nn['peak_ram_mib']:,.0f} MiB)"
    )
    if device == "cpu" and acc_maskmed < 0.25 * plain["peak_ram_mib"]:
        text += ", so at this volume size the peak is the network's activations"
        if plain["tile_batch"] != nn["tile_batch"]:
            text += f", which grow with the tile batch ({plain['tile_batch']} vs {nn['tile_batch']})"
        else:
            text += f" at the same tile batch ({plain['tile_batch']})"
    text += "."
    reused = paper.get("tiles_reused", 0)
    if reused:
        total = paper["tiles"] + reused
        text += (
            f" {reused} of the {total} tiles lie wholly in air (one constant value after CT normalisation): MaskMed "
            f"ran the network on {paper['tiles']} and reused the stored output for the rest (exact; "
            f"`inference/constant_tiles.py`); nnU-Net ran all {nn['tiles']}."
        )
    if "error" not in swin:
        text += (
            f" MONAI + SwinUNETR ({swin['params'] / 1e6:.0f} M parameters) needs "
            f"{swin['forward_s'] / max(swin['tiles'], 1):.2f} s per tile; MONAI has no mirroring TTA of its own "
            f"(wrapped by hand here) and no preprocessing or export (normalisation and argmax by hand, inside wall s)."
        )
    if not payload["settings"].get("repeat", True):
        return text + " Each row ran once (cold), nnU-Net's first."
    return text + (
        " Rows 1-3 show the faster of two cold runs, the others a single one; on a machine shared with other "
        "jobs small ratios still carry noise (every run is in the JSON)."
    )


def render_markdown(payload: dict[str, Any], info: dict[str, Any], started: float) -> str:
    s, mode = payload["settings"], payload["mode"]
    rows = {r["key"]: r for r in payload["rows"]}
    ref = rows["nnunet"]
    d, h, w = s["shape"]
    source = (
        "real CT (TotalSegmentator's example abdomen-pelvis CT, 3 mm, resampled to the plan's spacing and padded "
        "in-plane with -1024 HU to a 410 mm field of view: `Testing/Benchmarks/whole_scan_ct.py`)"
        if s.get("input") == "real_ct"
        else "synthetic CT (MaskMed phantom, int16 HU)"
    )
    lines = [
        f"### Whole-volume inference ({mode})\n",
        bh.stamp(info, started),
        f"Input: {source} of {w}×{h}×{d} voxels (x×y×z) at spacing "
        f"{s['spacing'][2]}×{s['spacing'][1]}×{s['spacing'][0]} mm = the plan's spacing (no resampling); "
        f"tile {'×'.join(map(str, s['tile']))}, overlap {OVERLAP}, Gaussian weighting, mirroring TTA "
        f"{'on (8 passes)' if s['tta'] else 'off'}, K = {payload['num_classes']} classes, random weights, device "
        f"{payload['device']}."
        + (
            " Quick mode: volume and tile reduced from the issue's 512×512×200 / 128³ to fit 2 CPU cores."
            if mode == "quick"
            else ""
        )
        + (
            " Standard mode: the whole-scan CPU rows of issue 14, TTA off (8 passes per tile would take ~8 h on "
            "2 cores)."
            if mode.startswith("standard")
            else ""
        )
        + "\n",
    ]
    header = [
        "row",
        "network",
        "params",
        "tiles",
        "tile batch",
        "load s",
        "forward s",
        "wall s",
        "× nnU-Net",
        "CPU s",
        "peak RAM MiB",
        "× nnU-Net",
    ]
    if payload["device"].startswith("cuda"):
        header.append("peak GPU MiB")
    table_rows = []
    for key, label, _, network in ROWS:
        if key not in rows:
            continue
        r = rows[key]
        if "error" in r:
            table_rows.append([label, network, *["–"] * (len(header) - 3), f"failed: {r['error'][:120]}"])
            continue
        cells = [
            label,
            network,
            f"{r['params'] / 1e6:.1f} M",
            f"{r['tiles']} (+{r['tiles_reused']} reused)" if r.get("tiles_reused") else r["tiles"],
            r["tile_batch"],
            r["load_s"],
            r["forward_s"],
            r["predict_s"],
            _ratio(r["predict_s"], ref.get("predict_s")),
            r["cpu_s"],
            r["peak_ram_mib"],
            _ratio(r["peak_ram_mib"], ref.get("peak_ram_mib")),
        ]
        if payload["device"].startswith("cuda"):
            cells.append(r["peak_gpu_mib"])
        table_rows.append(cells)
    lines.append(bh.table(header, table_rows))
    lines.append(
        "*wall s*: the predict call from the in-memory image to the in-memory label map (preprocessing, sliding "
        "window, back to the input grid); *forward s*: the network's forward passes inside it; *load s*: building "
        "the predictor (reading the checkpoint) — not part of wall s; *CPU s*: CPU time of all threads during the "
        "call (less sensitive than wall s to other jobs on the machine); *peak RAM*: added over the state before "
        "the call.\n"
    )
    t = payload["targets"]
    lines.append("Targets (`maskmed predict` vs `nnUNetPredictor`):\n")
    for key in TARGET_ROWS:
        if key not in t:
            continue
        label = dict((k, lab) for k, lab, _, _ in ROWS)[key]
        lines.append(
            f"- {label}: wall time ≤ {t[key]['wall_target']}× — {bh.met(t[key]['wall_met'])} "
            f"({t[key]['wall_ratio']:.2f}×); "
            f"peak RAM ≤ 1× — {bh.met(t[key]['ram_met'])} ({t[key]['ram_ratio']:.2f}×)"
        )
    lines.append("")
    for key, prof in (payload.get("profile") or {}).items():
        if "error" in prof:
            lines.append(f"Profile of {key} failed: {prof['error'][:200]}\n")
            continue
        centres = ", ".join(f"{c['name']} {c['percent']:.0f} %" for c in prof["centres"] if c["percent"] >= 1)
        phases = ", ".join(f"{name} {mib:,.0f} MiB" for name, mib in prof["phase_peak_ram_mib"].items())
        top = ", ".join(f"`{t['function']}` {t['tottime_s']:.1f} s" for t in prof["top_tottime"][:5])
        lines.append(
            f"Where the time goes ({key}, cProfile of `Predictor.predict`, {prof['total_s']:.1f} s): {centres}. "
            f"Top functions by own time: {top}. "
            f"Peak RAM above the call's start reached inside each phase: {phases}.\n"
        )
    lines.append(interpretation(payload) + "\n")
    return "\n".join(lines)


def run_rows(
    kwargs: dict[str, dict[str, Any]], device: str, timeout: float, mode: str, settings: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Every row of the mode in a fresh child; with ``repeat`` the compared rows (MaskMed and nnU-Net) a
    second time in reverse order, so load from other jobs on a shared machine or drift hits them alike. A
    row reports its fastest run (the least disturbed one); ``runs`` keeps every run."""
    kinds = {key: kind for key, _, kind, _ in ROWS if key in settings["rows"]}
    order = [key for key in settings["rows"] if key in kinds]
    if settings["repeat"]:
        order += [key for key in reversed(COMPARED_ROWS) if key in kinds]
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in kinds}
    for key in order:
        result = bh.run_child(SCRIPT, kinds[key], {**kwargs[key], "device": device}, timeout)
        runs[key].append(result)
        summary = result.get("error") or f"wall {result['predict_s']:.1f} s, peak RAM {result['peak_ram_mib']:.0f} MiB"
        print(f"[inference {mode}] {key} run {len(runs[key])}: {summary}", flush=True)
    rows = {}
    for key, label, _, network in ROWS:
        if key not in kinds:
            continue
        ok = [r for r in runs[key] if "error" not in r]
        best = min(ok, key=lambda r: r["predict_s"]) if ok else runs[key][-1]
        brief = [
            r.get("error") or {k: r[k] for k in ("predict_s", "cpu_s", "forward_s", "peak_ram_mib")} for r in runs[key]
        ]
        rows[key] = {"key": key, "row": label, "network": network, **best, "runs": brief}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bh.add_common_args(parser)
    parser.add_argument(
        "--standard", action="store_true", help="issue 14's whole-scan CPU rows (512x512x224, 128^3 tiles, no TTA)"
    )
    parser.add_argument(
        "--standard-bf16",
        action="store_true",
        help="the whole-scan CPU input with the paper network under --precision bf16 vs nnUNetPredictor",
    )
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "standard-bf16" if args.standard_bf16 else "standard" if args.standard else "full"
    device = bh.resolve_device(args.device)
    settings = {**MODE_DEFAULTS, **MODES[mode]}
    started = time.perf_counter()
    info = bh.machine_info(device)
    profile: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        prepared = prepare(Path(tmp), settings)
        print(f"[inference {mode}] inputs ready after {time.perf_counter() - started:.0f} s", flush=True)
        rows = run_rows(prepared["kwargs"], device, args.timeout, mode, settings)
        targets = evaluate_targets(rows, settings["wall_target"])
        # One profile suffices: the predictor's own cost centres are the same for both networks.
        missed = [key for key in targets if False in (targets[key]["wall_met"], targets[key]["ram_met"])]
        if missed and settings["profile"]:
            kwargs = {**prepared["kwargs"][missed[0]], "device": device}
            profile[missed[0]] = bh.run_child(SCRIPT, "profile", kwargs, args.timeout)
            print(f"[inference {mode}] profiled {missed[0]}", flush=True)
    payload = {
        "benchmark": NAME,
        "mode": mode,
        "device": device,
        "machine": info,
        "settings": {**settings, "overlap": OVERLAP, "gaussian": True, "monai_sw_batch": MONAI_SW_BATCH},
        "num_classes": prepared["num_classes"],
        "intensity": prepared["intensity"],
        "rows": list(rows.values()),
        "targets": targets,
        "profile": profile or None,
        "total_s": round(time.perf_counter() - started, 1),
        "command": bh.command_line(),
    }
    path = bh.write_result(NAME, mode, payload)
    markdown = render_markdown(payload, info, started)
    if not args.no_markdown:
        bh.update_markdown(f"{NAME}-{mode}", markdown)
    print(markdown)
    print(f"[inference {mode}] wrote {path} in {payload['total_s']:.0f} s", flush=True)
    return 1 if any("error" in r for r in rows.values()) else 0


if __name__ == "__main__":
    if not bh.child_main(HANDLERS):
        sys.exit(main())
