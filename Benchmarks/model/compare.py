"""Side-by-side forward-pass speed: `bottleneck bench` vs PyTorch eager and ONNX Runtime, with the
same deterministic synthetic weights (Tests/Reference/models/synthetic.py), same 224x224 input size,
same thread count, forward to the bottleneck (ResNet/Lite: pooled features, VGG: fc7).

Run from the repository root after `swift build -c release`:
  /opt/refvenv/bin/python Benchmarks/model/compare.py [--threads 2] [--batches 1,8,32] [--models resnet50,efficientnet-lite0]
Needs torch, torchvision, onnx, onnxruntime (and efficientnet_lite_pytorch for Lite models); not a
test dependency. Runs ours and the peers in alternation per (model, batch) and prints a Markdown table
(median images/s over --iterations passes after a warm-up; peak RSS of our process).
"""
import argparse, json, os, subprocess, sys, tempfile, time
import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
sys.path.insert(0, os.path.join(ROOT, "Tests/Reference/models"))
from synthetic import apply_synthetic, synthetic_input  # noqa: E402

CUT = {"resnet": 1, "vgg": 1, "efficientnet-lite": 1}


def peer_model(name):
    import torchvision
    if name.startswith("efficientnet-lite"):
        from efficientnet_lite_pytorch import EfficientNet
        m = EfficientNet.from_name(name, image_size=224)
        apply_synthetic(m); m._fc = torch.nn.Identity()
    elif name.startswith("vgg"):
        m = getattr(torchvision.models, name)(); apply_synthetic(m)
        m.classifier[6] = torch.nn.Identity()   # to fc7 (after ReLU; dropout is identity)
    else:
        m = getattr(torchvision.models, name)(); apply_synthetic(m)
        m.fc = torch.nn.Identity()               # pooled features
    return m.eval()


def timed(fn, iterations, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iterations):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def bench_torch(model, x, iterations):
    best = 0.0
    for cl in (False, True):
        m = model.to(memory_format=torch.channels_last) if cl else model.to(memory_format=torch.contiguous_format)
        xi = x.to(memory_format=torch.channels_last) if cl else x.contiguous()
        with torch.inference_mode():
            best = max(best, x.shape[0] / timed(lambda: m(xi), iterations))
    return best


def bench_ort(model, x, threads, iterations, name):
    import onnxruntime as ort
    path = os.path.join(tempfile.gettempdir(), f"bottleneck_bench_{name}_{x.shape[0]}.onnx")
    torch.onnx.export(model, x, path, input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return x.shape[0] / timed(lambda: s.run(None, feed), iterations)


def bench_ours(name, batch, threads, iterations, cut):
    exe = os.path.join(ROOT, ".build/release/bottleneck")
    out = subprocess.run([exe, "bench", "--model", name, "--batch", str(batch), "--threads", str(threads), "--cut", str(cut),
                          "--size", "224", "--iterations", str(iterations), "--warmup", "1", "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--models", default="resnet50,efficientnet-lite0,resnet18,vgg16")
    ap.add_argument("--iterations", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = ["| model | batch | ours img/s | ours GFLOP/s | ours peak RSS MB | torch img/s | ORT img/s | ours/torch | ours/ORT |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name in a.models.split(","):
        model = peer_model(name)
        family = "efficientnet-lite" if name.startswith("efficientnet") else ("vgg" if name.startswith("vgg") else "resnet")
        for b in map(int, a.batches.split(",")):
            x = torch.from_numpy(synthetic_input("bench", (b, 3, 224, 224)))
            iters = a.iterations if b > 1 else 3 * a.iterations
            ours = bench_ours(name, b, a.threads, iters, CUT[family])
            tv = bench_torch(model, x, iters)
            ov = bench_ort(model, x, a.threads, iters, name)
            o = ours["images_per_second"]
            rows.append(f"| {name} | {b} | {o:.1f} | {ours['gflops']:.0f} | {ours['peak_rss_bytes'] / 1e6:.0f} | {tv:.1f} | {ov:.1f} | {o / tv:.2f} | {o / ov:.2f} |")
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
