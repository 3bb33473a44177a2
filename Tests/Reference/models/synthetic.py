"""Deterministic synthetic weights and inputs, bit-identical to Swift's `SyntheticWeights`.

Not a script; imported by kernels.py and parity.py in this folder.

Generator: SplitMix64 (BottleneckCore.SplitMix64). Every tensor gets its own stream, seeded with
the 64-bit FNV-1a hash of its UTF-8 name, so values do not depend on parameter order or on which
parameters a truncated network loads. Element i (C order) uses the (i+1)-th output of the stream;
u = (z >> 40) * 2^-24 is exact in float32.

Fill rule by kind (fan_in = product of all dims but the first):
  conv / linear weight : (2u - 1) * sqrt(6 / fan_in)    (He-uniform, variance 2/fan_in)
  conv / linear bias   : (2u - 1) * 0.1
  BN weight (gamma)    : 0.75 + 0.5u
  BN weight closing a residual branch (ResNet bn2 of BasicBlock / bn3 of Bottleneck, EfficientNet
  _bn2 of a block with a skip connection, torchvision MobileNetV2's last BN of a block with
  use_res_connect): 0.1 + 0.2u, so the residual stream of ResNet-152 stays
  below ~100 at the logits instead of growing ~1.3x per block (3000+ with plain gammas)
  BN bias (beta)       : (2u - 1) * 0.1
  BN running_mean      : (2u - 1) * 0.1
  BN running_var       : 0.5 + u
All arithmetic is float32 as in Swift.
"""
import math
import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


def fnv1a64(name: str) -> int:
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def splitmix(seed: int, n: int, offset: int = 0) -> np.ndarray:
    """Outputs offset+1 .. offset+n of SplitMix64 seeded with `seed`, as uint64."""
    with np.errstate(over="ignore"):
        i = np.arange(offset + 1, offset + n + 1, dtype=np.uint64)
        z = np.uint64(seed) + i * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * M1
        z = (z ^ (z >> np.uint64(27))) * M2
        return z ^ (z >> np.uint64(31))


def uniform(seed: int, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.float32)
    step = 1 << 24
    for s in range(0, n, step):
        m = min(step, n - s)
        out[s:s + m] = (splitmix(seed, m, s) >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / 16777216.0)
    return out


def symmetric(seed: int, n: int, scale: float) -> np.ndarray:
    u = uniform(seed, n)
    return (u * np.float32(2) - np.float32(1)) * np.float32(scale)


def fill(name: str, kind: str, shape) -> np.ndarray:
    n = int(np.prod(shape)) if len(shape) else 1
    seed = fnv1a64(name)
    if kind == "weight":
        fan_in = int(np.prod(shape[1:]))
        v = symmetric(seed, n, math.sqrt(6.0 / fan_in))
    elif kind in ("bias", "bn_bias", "bn_mean"):
        v = symmetric(seed, n, 0.1)
    elif kind == "bn_weight":
        v = np.float32(0.75) + np.float32(0.5) * uniform(seed, n)
    elif kind == "bn_weight_residual":
        v = np.float32(0.1) + np.float32(0.2) * uniform(seed, n)
    elif kind == "bn_var":
        v = np.float32(0.5) + uniform(seed, n)
    else:
        raise ValueError(kind)
    return v.reshape(shape)


def residual_bn_names(model) -> set:
    """Module names of the BNs that close a residual branch (see the fill rule)."""
    names = set()
    for mname, module in model.named_modules():
        cls = type(module).__name__
        if cls == "BasicBlock":
            names.add(f"{mname}.bn2")
        elif cls == "Bottleneck":
            names.add(f"{mname}.bn3")
        elif cls == "MBConvBlock":
            a = module._block_args
            if module.id_skip and a.stride == 1 and a.input_filters == a.output_filters:
                names.add(f"{mname}._bn2")
        elif cls == "InvertedResidual" and getattr(module, "use_res_connect", False):
            names.add(f"{mname}.conv.{len(module.conv) - 1}")  # torchvision MobileNetV2: the last BN of `conv`
    return names


def kind_of(module, pname: str, residual: bool = False) -> str:
    import torch.nn as nn
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if residual and pname == "weight":
            return "bn_weight_residual"
        return {"weight": "bn_weight", "bias": "bn_bias", "running_mean": "bn_mean", "running_var": "bn_var"}[pname]
    return {"weight": "weight", "bias": "bias"}[pname]


def apply_synthetic(model):
    """Overwrites every parameter and BN buffer of `model` with the synthetic fill."""
    import torch
    residual = residual_bn_names(model)
    with torch.no_grad():
        for mname, module in model.named_modules():
            for pname, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                if pname == "num_batches_tracked":
                    continue
                full = f"{mname}.{pname}" if mname else pname
                t.copy_(torch.from_numpy(fill(full, kind_of(module, pname, mname in residual), tuple(t.shape))))
    return model


def synthetic_input(name: str, shape, scale: float = 2.0) -> np.ndarray:
    """Deterministic input in [-scale, scale), stream seeded with fnv1a64(name)."""
    return symmetric(fnv1a64(name), int(np.prod(shape)), scale).reshape(shape)


def sample_indices(name: str, n: int, k: int = 2048) -> np.ndarray:
    """Indices into a flat tensor of n elements that the parity fixtures keep: all when n <= k,
    else k pseudo-random ones (SplitMix64 seeded with fnv1a64(name), z % n)."""
    if n <= k:
        return np.arange(n, dtype=np.int64)
    return (splitmix(fnv1a64(name), k) % np.uint64(n)).astype(np.int64)
