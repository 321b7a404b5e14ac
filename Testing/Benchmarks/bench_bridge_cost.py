"""What the FSAD bridge costs per training step on the plans MaskMed meets: paper network vs the same
network without the bridge, interleaved in one process.

    python Testing/Benchmarks/bench_bridge_cost.py            # CPU: ~10 min on 2 cores
    python Testing/Benchmarks/bench_bridge_cost.py --device cuda

Why: the bridge's queries are the voxels of its query stages. With a fixed count of 3 query stages, a
4-stage plan (MSD hippocampus) made the stride-2 stage a query stage (78k tokens per batch) and the
step 9x slower than without the bridge. ``ModelConfig.preset`` now derives the count from the strides
(``default_bridge_query_stages``: stages downsampled >= 8^3, at most 3). Target (issue 16): the paper
network's step <= 1.3x the same network without the bridge on every plan.

Plans (each the planner's own topology for a real dataset, or nnU-Net's for AMOS):

- ``amos-like``: nnU-Net's 6-stage isotropic 3d_fullres topology (features 32-320), patch 64^3 on the
  CPU (128^3 on a GPU), batch 2;
- ``hippocampus``: ``maskmed plan`` of MSD Task04 (4 stages, 40x56x40, the plan's batch);
- ``brats-3mm``: ``maskmed plan`` of the BraTS cases resampled to 3 mm (the accuracy benchmark's quick task).

Rows per plan: ``bridge: none``, ``FSAD (query stages by resolution)``, and on the hippocampus plan also
``FSAD, 3 query stages (the old fixed count)`` to show what the rule fixed. Step = forward + the MaskMed
loss + backward + clip + SGD; 1 warm-up step per row, then ``--repeats`` rounds that time one step of
every row in turn (drift hits all rows alike); median and min-max per row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_harness as bh  # noqa: E402

TARGET_RATIO = 1.3
SCRIPT = Path(__file__).resolve()


def _plan_topology(task: str, data: Path, device: str) -> dict:
    """The plan's patch, batch, strides, kernels and features (the planner run on the real data)."""
    if task == "amos-like":
        n = 6
        return {
            "patch": [128, 128, 128] if device.startswith("cuda") else [64, 64, 64],
            "batch": 2,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
            "kernel_sizes": [[3, 3, 3]] * n,
            "features": [min(32 * 2**i, 320) for i in range(n)],
            "channels": 1,
            "classes": 16,
            "source": "nnU-Net's 6-stage isotropic 3d_fullres topology (AMOS 2022: 15 organs + background)",
        }
    import accuracy_datasets as ad

    from MaskMedCore.data.dataset import load_dataset
    from MaskMedCore.data.fingerprint import compute_fingerprint
    from MaskMedCore.data.planner import plan_dataset

    built = ad.build_task("hippocampus" if task == "hippocampus" else "brats", data, quick=True)
    dataset = load_dataset(built.raw_dir)
    plan = plan_dataset(dataset, compute_fingerprint(dataset, workers=1))
    return {
        "patch": list(plan.patch_size),
        "batch": plan.batch_size,
        "strides": [list(s) for s in plan.strides],
        "kernel_sizes": [list(k) for k in plan.kernel_sizes],
        "features": list(plan.features_per_stage),
        "channels": len(plan.channel_names),
        "classes": plan.num_classes,
        "source": f"maskmed plan of {built.dataset_name} ({built.spacing_note})",
    }


def measure_plan(task: str, data: str, device: str, repeats: int) -> dict:
    """Child: build every row's network for one plan and time their steps interleaved."""
    import torch

    from MaskMedCore.config import ModelConfig
    from MaskMedCore.losses import build_criterion
    from MaskMedCore.models.build import build_model

    topo = _plan_topology(task, Path(data), device)
    base = dict(
        strides=tuple(map(tuple, topo["strides"])),
        kernel_sizes=tuple(map(tuple, topo["kernel_sizes"])),
        features_per_stage=tuple(topo["features"]),
    )
    rows = {"bridge: none": {"bridge": "none"}, "FSAD (query stages by resolution)": {}}
    if task == "hippocampus":
        rows["FSAD, 3 query stages (the old fixed count)"] = {"bridge_query_stages": 3}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((topo["batch"], topo["channels"], *topo["patch"]), generator=gen).to(device)
    y = torch.randint(0, topo["classes"], (topo["batch"], *topo["patch"]), generator=gen).to(device)
    use_amp = device.startswith("cuda")
    steps, info = {}, {}
    for name, overrides in rows.items():
        torch.manual_seed(0)
        cfg = ModelConfig.preset("paper", topo["channels"], topo["classes"], **base, **overrides)
        net = build_model(cfg).to(device).train()
        criterion = build_criterion(cfg)
        opt = torch.optim.SGD(net.param_groups(1e-3, 0.1, 3e-5), lr=1e-3, momentum=0.99, nesterov=True)

        def step(net=net, criterion=criterion, opt=opt) -> None:
            opt.zero_grad(set_to_none=True)
            amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else torch.autocast("cpu", enabled=False)
            with amp:
                out = net(x)
            criterion(out, y).total.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
            opt.step()

        steps[name] = step
        tokens = 0
        if cfg.bridge != "none":
            sizes = list(topo["patch"])
            per_stage = []
            for s in cfg.strides:
                sizes = [a // b for a, b in zip(sizes, s)]
                per_stage.append(sizes[0] * sizes[1] * sizes[2])
            tokens = topo["batch"] * sum(per_stage[-cfg.bridge_query_stages :])
        info[name] = {"query_stages": cfg.bridge_query_stages if cfg.bridge != "none" else 0, "query_tokens": tokens}
    times: dict[str, list[float]] = {name: [] for name in rows}
    for step in steps.values():  # warm-up
        bh.time_calls(step, device, 1, 0)
    for _ in range(repeats):
        for name, step in steps.items():
            times[name] += bh.time_calls(step, device, 0, 1)
    return {"topology": topo, "rows": {n: {**info[n], "step_times_s": times[n]} for n in rows}}


def render(payload: dict, started: float, info: dict) -> str:
    lines, verdicts = [], []
    for task, res in payload["plans"].items():
        if "error" in res:
            lines.append([task, "–", "–", "–", "error: " + res["error"][:100], "–", "–"])
            continue
        topo = res["topology"]
        none = bh.median(res["rows"]["bridge: none"]["step_times_s"])
        for name, r in res["rows"].items():
            med = bh.median(r["step_times_s"])
            ratio = med / none
            lines.append(
                [
                    task,
                    f"{'×'.join(map(str, topo['patch']))}, batch {topo['batch']}, {len(topo['strides'])} stages",
                    name,
                    f"{r['query_stages']} ({r['query_tokens']:,} tokens)",
                    f"{med:.2f} ({min(r['step_times_s']):.2f}–{max(r['step_times_s']):.2f})",
                    f"{ratio:.2f}×",
                    bh.met(ratio <= TARGET_RATIO) if name.startswith("FSAD (query") else "",
                ]
            )
            if name.startswith("FSAD (query"):
                verdicts.append(ratio <= TARGET_RATIO)
    where = "GPU, bf16 autocast" if payload["device"].startswith("cuda") else "CPU, float32"
    return "\n".join(
        [
            f"## FSAD bridge cost per plan ({where})\n",
            bh.stamp(info, started),
            "MaskMed `paper` preset on each plan's topology; step = forward + MaskMed loss + backward + clip + SGD, "
            f"median (min–max) of {payload['repeats']} interleaved rounds after a warm-up. Ratio to the same network "
            f"without the bridge; target ≤ {TARGET_RATIO}× on every plan. Query stages follow "
            "`default_bridge_query_stages` (stages downsampled ≥ 8³, at most 3). Plans: "
            + "; ".join(f"{t}: {r['topology']['source']}" for t, r in payload["plans"].items() if "topology" in r)
            + ".\n",
            bh.table(["plan", "patch", "row", "query stages", "step s", "× no bridge", "target"], lines),
            f"Target on every plan: {bh.met(bool(verdicts) and all(verdicts))}.\n",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bh.add_common_args(parser, default_timeout=3600)
    parser.add_argument("--plans", nargs="+", default=["amos-like", "hippocampus", "brats-3mm"])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (each times one step of every row)")
    parser.add_argument("--data", type=Path, default=bh.SHARED_DATA)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = bh.resolve_device(args.device)
    payload = {"device": device, "repeats": args.repeats, "plans": {}, "command": bh.command_line()}
    for task in args.plans:
        kwargs = {"task": task, "data": str(args.data), "device": device, "repeats": args.repeats}
        payload["plans"][task] = bh.run_child(SCRIPT, "plan", kwargs, args.timeout)
        print(f"{task}: {payload['plans'][task].get('error', 'done')}", flush=True)
    info = bh.machine_info(device)
    mode = "cuda" if device.startswith("cuda") else "cpu"
    path = bh.write_result("bridge_cost", mode, payload)
    md = render(payload, started, info)
    if not args.no_markdown:
        bh.update_markdown(f"bridge-cost-{mode}", md)
    print(md)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    if not bh.child_main({"plan": measure_plan}):
        raise SystemExit(main())
