"""FSAD-Transformer vs dense self-attention over the same tokens: time and memory as the input grows.

MaskMed §3.3 / appendix B claim that the FSAD-Transformer fuses all scales at a memory cost a
dense Transformer cannot afford. Both bridges here are the ``paper`` preset's (width 192, 8
heads, 3 layers, FFN 768, queries = voxels of the 3 coarsest of 6 encoder stages with channels
32-320) and see identical encoder skips of a cubic input of edge S:

- ``fsad``: queries attend, by 3D deformable sampling (4 points per head and level), to ALL six
  encoder stages down to full resolution;
- ``dense (fused SDPA)``: full self-attention among the same query tokens through
  ``scaled_dot_product_attention`` with PyTorch's default (flash/memory-efficient) kernel;
- ``dense (materialised)``: the same attention with the math kernel, which stores the
  (M, N, N) attention matrix as a textbook Transformer (and the paper's "standard" bridge) does.

One forward + backward per measurement (the skips do not require gradients, so only the
bridge's own activations and parameter gradients count). Each (bridge, size) runs in its own
process; a size is skipped when the power law fitted to the smaller sizes predicts it would
exceed the memory budget, and the largest size within the budget is reported both as measured
and as extrapolated from the fit.

Target (issue 5): FSAD memory grows linearly and uses <= 10% of dense attention at the largest
size dense attention fits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_harness as bh  # noqa: E402

BRIDGES = ("fsad", "dense_fused", "dense_math")
LABELS = {"fsad": "FSAD (all 6 levels)", "dense_fused": "dense (fused SDPA)", "dense_math": "dense (materialised)"}
STAGE_CHANNELS = (32, 64, 128, 256, 320, 320)
QUERY_STAGES = 3
TARGET_FRACTION = 0.10


def tokens(edge: int) -> int:
    """Query tokens of the 3 coarsest stages of a 6-stage, stride-2 UNet at input edge S."""
    return sum((edge // 2**s) ** 3 for s in range(len(STAGE_CHANNELS) - QUERY_STAGES, len(STAGE_CHANNELS)))


# ------------------------------------------------------------------------------------------ child
def measure_bridge(bridge: str, edge: int, batch: int, device: str, warmup: int, repeats: int) -> dict:
    """Child: forward + backward of one bridge on random skips of a cubic input of edge ``edge``."""
    import contextlib

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from MaskMedCore.models.bridges import build_bridge

    torch.manual_seed(0)
    kind = "fsad" if bridge == "fsad" else "standard"
    net = build_bridge(kind, STAGE_CHANNELS, QUERY_STAGES, dim=192, heads=8, points=4, layers=3, ffn_dim=768)
    net.to(device).train()
    gen = torch.Generator().manual_seed(0)
    skips = [
        torch.randn((batch, c, *(edge // 2**s,) * 3), generator=gen).to(device) for s, c in enumerate(STAGE_CHANNELS)
    ]
    kernel = sdpa_kernel(SDPBackend.MATH) if bridge == "dense_math" else contextlib.nullcontext()
    use_amp = device.startswith("cuda")

    def step() -> None:
        net.zero_grad(set_to_none=True)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
        with kernel, amp:
            out = net(skips)
        sum(o.float().square().mean() for o in out[-QUERY_STAGES:]).backward()

    bh.time_calls(step, device, warmup, 0)
    with bh.PeakMemory(device) as mem:
        times = bh.time_calls(step, device, 0, repeats)
    return {"step_s": bh.median(times), "peak_mib": mem.peak_mib, "tokens": tokens(edge)}


# ----------------------------------------------------------------------------------------- parent
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bh.add_common_args(parser)
    parser.add_argument("--sizes", type=int, nargs="+", help="cubic input edges (multiples of 32)")
    parser.add_argument("--budget-gib", type=float, help="memory budget (default 8 GiB CPU quick, 90%% of the GPU)")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = bh.resolve_device(args.device)
    mode = "quick" if args.quick else "full"
    info = bh.machine_info(device)
    sizes = args.sizes or ([64, 96, 128] if args.quick else [64, 96, 128, 160, 192, 224, 256, 320])
    if any(s % 32 for s in sizes):
        raise SystemExit(f"--sizes must be multiples of 32 (5 stride-2 stages), got {sizes}")
    budget = args.budget_gib or (0.9 * info["gpu_memory_gib"] if "gpu_memory_gib" in info else 8.0)
    script = Path(__file__).resolve()

    rows: dict[str, list[dict]] = {b: [] for b in BRIDGES}
    for bridge in BRIDGES:
        for edge in sorted(sizes):
            done = [r for r in rows[bridge] if "peak_mib" in r]
            k, a = bh.fit_power_law([r["edge"] ** 3 for r in done], [r["peak_mib"] for r in done])
            predicted = a * (edge**3) ** k / 1024 if k == k else None
            if predicted is not None and predicted > budget:
                rows[bridge].append({"edge": edge, "tokens": tokens(edge), "skipped": f"predicted {predicted:.1f} GiB"})
                continue
            kwargs = {
                "bridge": bridge,
                "edge": edge,
                "batch": args.batch,
                "device": device,
                "warmup": 0 if args.quick else 1,
                "repeats": 1 if args.quick else 3,
            }
            res = bh.run_child(script, "bridge", kwargs, args.timeout)
            rows[bridge].append({"edge": edge, "tokens": tokens(edge), **res})
            print(f"{bridge} {edge}^3: {res.get('peak_mib', res.get('error'))} MiB", flush=True)

    summary = {b: _summary(rows[b], budget) for b in BRIDGES}
    payload = {
        "benchmark": "fsad_vs_dense",
        "mode": mode,
        "device": device,
        "batch": args.batch,
        "budget_gib": budget,
        "machine": info,
        "command": bh.command_line(),
        "rows": rows,
        "summary": summary,
    }
    path = bh.write_result("fsad_vs_dense", mode, payload)
    if not args.no_markdown:
        bh.update_markdown(f"fsad-vs-dense-{mode}", render(payload, started, info))
    print(f"wrote {path}")
    return 0


def _summary(rows: list[dict], budget_gib: float) -> dict:
    ok = [r for r in rows if "peak_mib" in r]
    vox = [r["edge"] ** 3 for r in ok]
    k_mem, a_mem = bh.fit_power_law(vox, [r["peak_mib"] for r in ok])
    k_time, _ = bh.fit_power_law(vox, [r["step_s"] for r in ok])
    fitting = [r["edge"] for r in ok if r["peak_mib"] <= budget_gib * 1024]
    voxels_at_budget = (budget_gib * 1024 / a_mem) ** (1 / k_mem) if k_mem == k_mem and k_mem > 0 else None
    return {
        "memory_exponent_vs_voxels": k_mem,
        "time_exponent_vs_voxels": k_time,
        "largest_measured_edge_within_budget": max(fitting) if fitting else None,
        "extrapolated_edge_at_budget": voxels_at_budget ** (1 / 3) if voxels_at_budget else None,
    }


def render(payload: dict, started: float, info: dict) -> str:
    rows, summary, budget = payload["rows"], payload["summary"], payload["budget_gib"]
    edges = sorted({r["edge"] for rs in rows.values() for r in rs})
    by = {(b, r["edge"]): r for b, rs in rows.items() for r in rs}

    def cell(b: str, e: int, key: str) -> str:
        r = by.get((b, e), {})
        if key in r:
            return f"{r[key]:.3g}" if r[key] < 100 else f"{r[key]:,.0f}"
        return "skipped: " + r["skipped"] if "skipped" in r else ("error" if "error" in r else "–")

    header = ["input edge S", "query tokens"]
    header += [f"{LABELS[b]} {q}" for b in BRIDGES for q in ("s", "MiB")]
    body = [
        [f"{e}³", by.get((BRIDGES[0], e), {}).get("tokens", "")]
        + [cell(b, e, key) for b in BRIDGES for key in ("step_s", "peak_mib")]
        for e in edges
    ]
    fit_rows = []
    for b in BRIDGES:
        s = summary[b]
        ext = s["extrapolated_edge_at_budget"]
        fit_rows.append(
            [
                LABELS[b],
                s["memory_exponent_vs_voxels"],
                s["time_exponent_vs_voxels"],
                f"{s['largest_measured_edge_within_budget']}³" if s["largest_measured_edge_within_budget"] else "none",
                f"≈{ext:.0f}³" if ext else "–",
            ]
        )

    # Target: at the largest size the materialised dense attention was measured within budget.
    dense_ok = [r for r in rows["dense_math"] if "peak_mib" in r and r["peak_mib"] <= budget * 1024]
    fraction = None
    text_fraction = "no dense size was measured"
    if dense_ok:
        e = max(r["edge"] for r in dense_ok)
        f_row, d_row, df_row = by.get(("fsad", e), {}), by[("dense_math", e)], by.get(("dense_fused", e), {})
        if "peak_mib" in f_row:
            fraction = f_row["peak_mib"] / d_row["peak_mib"]
            fused = f" and {f_row['peak_mib'] / df_row['peak_mib']:.0%} of fused dense" if "peak_mib" in df_row else ""
            text_fraction = (
                f"at {e}³ FSAD uses {f_row['peak_mib']:,.0f} MiB = {fraction:.0%} of materialised dense "
                f"attention ({d_row['peak_mib']:,.0f} MiB){fused}"
            )
    linear = summary["fsad"]["memory_exponent_vs_voxels"]
    linear_ok = None if linear != linear else linear <= 1.15
    where = "GPU, bf16 autocast" if payload["device"].startswith("cuda") else "CPU, float32"
    return "\n".join(
        [
            f"### FSAD-Transformer vs dense self-attention, {payload['mode']} mode ({where}), "
            f"batch {payload['batch']}\n",
            bh.stamp(info, started),
            "Paper bridge settings (width 192, 8 heads, 3 layers, queries = 3 coarsest of 6 stages). Forward + "
            "backward of the bridge alone; memory = peak added during the step "
            f"({'CUDA allocator' if payload['device'].startswith('cuda') else 'process resident set'}); "
            f"memory budget {budget:.1f} GiB. Sizes predicted (by the fitted power law) to exceed the budget are "
            "skipped rather than run.\n",
            bh.table(header, body),
            "Growth, fitted as `y = a · voxels^k` over the measured sizes (k = 1 linear, k = 2 quadratic in tokens):\n",
            bh.table(
                [
                    "bridge",
                    "memory exponent k",
                    "time exponent k",
                    "largest measured size within budget",
                    "size at budget (extrapolated)",
                ],
                fit_rows,
            ),
            f"Target: FSAD memory linear — {bh.met(linear_ok)} (k = {linear:.2f}). "
            f"Target: FSAD ≤ {TARGET_FRACTION:.0%} of dense attention at the largest size dense fits — "
            f"{bh.met(None if fraction is None else fraction <= TARGET_FRACTION)} ({text_fraction}).\n",
        ]
    )


if __name__ == "__main__":
    if not bh.child_main({"bridge": measure_bridge}):
        raise SystemExit(main())
