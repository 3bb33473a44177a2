"""Reference forward outputs, gradients and 3-step SGD results for BottleneckTraining, computed with PyTorch.

Rerun (from the repository root):
    /opt/refvenv/bin/python Tests/Reference/training/make_grads.py

Writes small .npy files into Tests/BottleneckTrainingTests/Fixtures/. Every input, weight and upstream gradient
is generated with SplitMix64 (bit-identical to BottleneckCore.SplitMix64) so the Swift tests regenerate them;
only outputs are committed.

Generation protocol per case (mirrored by TrainingFixtures.swift):
  rng = SplitMix64(seed)
  1. parameters and buffers, in sorted state-dict key order (num_batches_tracked skipped):
       rank>=2 '.weight'     -> symmetric(1/sqrt(fan_in))     fan_in = prod(shape[1:])
       rank 1  '.weight'     -> 0.5 + uniform                 (BatchNorm gamma)
       '.running_var'        -> 0.5 + uniform
       '.bias', '.running_mean' -> symmetric(0.1)
  2. the input x: symmetric(x_scale)
  3. the upstream gradient dy: symmetric(1.0), shaped like the output
Files per case: <case>.y.npy (output), <case>.dx.npy (dL/dx), <case>.grads.npy (gradients of trainable
parameters, flattened and concatenated in sorted key order); bn_train adds <case>.stats.npy (updated running
stats, sorted key order). SGD cases: <case>.final.npy (all parameters and buffers after 3 steps, sorted key
order) and <case>.losses.npy.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models.resnet as tvr
from efficientnet_lite_pytorch.model import MBConvBlock
from efficientnet_lite_pytorch.utils import BlockArgs, GlobalParams

torch.set_num_threads(1)
MASK = (1 << 64) - 1
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "BottleneckTrainingTests", "Fixtures")


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def uniform(self, n):
        return np.array([np.float32(self.next() >> 40) * np.float32(1.0 / 16777216.0) for _ in range(n)], dtype=np.float32)

    def symmetric(self, n, scale):
        u = self.uniform(n)
        return ((u * np.float32(2) - np.float32(1)) * np.float32(scale)).astype(np.float32)


def fill_state(module, rng):
    sd = module.state_dict()
    new = {}
    for key in sorted(sd):
        if key.endswith("num_batches_tracked"):
            new[key] = sd[key]
            continue
        t = sd[key]
        n = t.numel()
        leaf = key.split(".")[-1]
        if leaf == "weight" and t.dim() >= 2:
            fan_in = int(np.prod(t.shape[1:]))
            v = rng.symmetric(n, np.float32(1.0 / math.sqrt(fan_in)))
        elif leaf in ("weight", "running_var"):
            v = (np.float32(0.5) + rng.uniform(n)).astype(np.float32)
        elif leaf in ("bias", "running_mean"):
            v = rng.symmetric(n, 0.1)
        else:
            raise ValueError(key)
        new[key] = torch.from_numpy(v.reshape(tuple(t.shape)))
    module.load_state_dict(new)


def save(name, arr):
    np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(np.asarray(arr, dtype=np.float32)))


def flat_grads(module):
    named = dict(module.named_parameters())
    return np.concatenate([named[k].grad.detach().numpy().ravel() for k in sorted(named)])


class Pad(nn.Module):
    """TF-SAME padding computed from the actual input size (equal to the static padding of the lite models)."""

    def __init__(self, k, s):
        super().__init__()
        self.k, self.s = k, s

    def forward(self, x):
        pads = []
        for n in (x.shape[3], x.shape[2]):
            o = -(-n // self.s)
            p = max((o - 1) * self.s + self.k - n, 0)
            pads += [p // 2, p - p // 2]
        return F.pad(x, pads)


class SameConv(nn.Module):
    def __init__(self, cin, cout, k, s, groups=1, bias=False):
        super().__init__()
        self.pad = Pad(k, s)
        self.conv = nn.Conv2d(cin, cout, k, s, 0, groups=groups, bias=bias)

    def forward(self, x):
        return self.conv(self.pad(x))


def lite_params(image):
    return GlobalParams(width_coefficient=1.0, depth_coefficient=1.0, image_size=image, dropout_rate=0.2,
                        num_classes=3, batch_norm_momentum=0.99, batch_norm_epsilon=1e-3, drop_connect_rate=0.2,
                        depth_divisor=8, min_depth=None, relu_fn="relu6", fix_head_stem=True, local_pooling=False,
                        use_se=False)


def mbconv(cin, cout, k, s, image):
    # Repeated lite blocks carry stride as the int 1 (the skip test is `stride == 1`); first blocks a list.
    args = BlockArgs(num_repeat=1, kernel_size=k, stride=s if s == 1 else [s], expand_ratio=6, input_filters=cin, output_filters=cout,
                     se_ratio=None, id_skip=True)
    return MBConvBlock(args, lite_params(image), image_size=image)


class Wrap(nn.Module):
    """Gives a bare functional op a module interface for the generic case runner."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def run_case(name, seed, module, x_shape, x_scale=1.0, train=False):
    rng = SplitMix64(seed)
    fill_state(module, rng)
    module.train(train)
    x = torch.from_numpy(rng.symmetric(int(np.prod(x_shape)), x_scale).reshape(x_shape)).requires_grad_(True)
    y = module(x)
    dy = torch.from_numpy(rng.symmetric(y.numel(), 1.0).reshape(tuple(y.shape)))
    y.backward(dy)
    save(name + ".y", y.detach().numpy())
    save(name + ".dx", x.grad.numpy())
    if list(module.parameters()):
        save(name + ".grads", flat_grads(module))
    if train:
        bufs = dict(module.named_buffers())
        save(name + ".stats", np.concatenate([bufs[k].numpy().ravel() for k in sorted(bufs) if "num_batches" not in k]))


def cases():
    run_case("conv_grouped", 101, nn.Conv2d(4, 6, 3, 2, 1, groups=2, bias=True), (2, 4, 7, 6))
    run_case("conv_dense_same", 102, SameConv(3, 5, 3, 2), (2, 3, 8, 7))
    run_case("conv_dw_same", 103, SameConv(6, 6, 5, 2, groups=6), (2, 6, 8, 9))
    run_case("conv_dw_s1", 104, nn.Conv2d(4, 4, 3, 1, 1, groups=4, bias=True), (2, 4, 5, 5))
    run_case("conv_1x1", 105, nn.Conv2d(8, 5, 1, bias=False), (2, 8, 4, 3))
    run_case("conv_1x1_s2", 106, nn.Conv2d(4, 6, 1, 2, bias=False), (2, 4, 5, 5))
    run_case("bn_eval", 107, nn.BatchNorm2d(5), (3, 5, 4, 3), x_scale=2.0)
    run_case("bn_train", 108, nn.BatchNorm2d(5, eps=1e-5, momentum=0.1), (3, 5, 4, 3), x_scale=2.0, train=True)
    run_case("relu", 109, nn.ReLU(), (2, 3, 4, 4), x_scale=3.0)
    run_case("relu6", 110, nn.ReLU6(), (2, 3, 4, 4), x_scale=8.0)
    run_case("maxpool", 111, nn.MaxPool2d(3, 2, 1), (2, 3, 7, 6))
    run_case("gap", 112, Wrap(lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1)), (2, 4, 3, 5))
    run_case("linear", 113, nn.Linear(7, 4), (3, 7))
    run_case("mbconv_skip", 114, mbconv(4, 4, 3, 1, 6), (2, 4, 6, 6))
    run_case("mbconv_s2", 115, mbconv(4, 8, 5, 2, 8), (2, 4, 8, 8))
    ds = nn.Sequential(nn.Conv2d(4, 8, 1, 2, bias=False), nn.BatchNorm2d(8))
    run_case("basic_ds", 116, tvr.BasicBlock(4, 8, 2, ds), (2, 4, 6, 6))
    ds = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
    run_case("bottleneck_ds", 117, tvr.Bottleneck(8, 4, 2, ds), (2, 8, 6, 6))

    # Cross-entropy: logits from the generator, fixed labels; dL/dlogits.
    rng = SplitMix64(118)
    logits = torch.from_numpy(rng.symmetric(20, 3.0).reshape(4, 5)).requires_grad_(True)
    loss = F.cross_entropy(logits, torch.tensor([0, 4, 2, 1]))
    loss.backward()
    save("xent.y", np.array([loss.item()]))
    save("xent.dx", logits.grad.numpy())


class TinyLite(nn.Module):
    """Two MBConv blocks (identity skip; stride 2 with asymmetric TF-SAME padding), conv_head+BN+ReLU6, pool, fc."""

    def __init__(self):
        super().__init__()
        self._blocks = nn.ModuleList([mbconv(8, 8, 3, 1, 8), mbconv(8, 16, 5, 2, 8)])
        self._conv_head = nn.Conv2d(16, 32, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(32, momentum=0.01, eps=1e-3)
        self._fc = nn.Linear(32, 3)

    def forward(self, x):
        for b in self._blocks:
            x = b(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def sgd_case(name, seed, train, lr, wd, nesterov, schedule):
    rng = SplitMix64(seed)
    model = TinyLite()
    fill_state(model, rng)
    model.train(train)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd, nesterov=nesterov)
    sched = schedule(opt)
    losses = []
    for t in range(3):
        x = torch.from_numpy(rng.symmetric(4 * 8 * 8 * 8, 1.0).reshape(4, 8, 8, 8))
        labels = torch.tensor([(t + i) % 3 for i in range(4)])
        opt.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    sd = model.state_dict()
    save(name + ".final", np.concatenate([sd[k].numpy().ravel() for k in sorted(sd) if "num_batches" not in k]))
    save(name + ".losses", np.array(losses))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    cases()
    sgd_case("sgd_eval_cosine", 201, False, 0.1, 1e-3, False,
             lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=3, eta_min=0.0))
    sgd_case("sgd_train_step_nesterov", 202, True, 0.05, 5e-4, True,
             lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.1))
    print("wrote", len(os.listdir(OUT)), "files to", os.path.normpath(OUT), file=sys.stderr)
