"""Kernel parity fixtures for BottleneckTensor: torch.nn.functional outputs (NCHW) on deterministic inputs.

Rerun: /opt/refvenv/bin/python Tests/Reference/models/kernels.py
Writes Tests/BottleneckTensorTests/Fixtures/kernels/<case>.npy (float32, torch layout). Inputs and
weights are not stored: the Swift tests regenerate them with the same SplitMix64 streams
(synthetic.synthetic_input(name, shape) / synthetic.fill(name, kind, shape)); names are "<case>.x",
"<case>.w", "<case>.b", ... as below.
"""
import os, sys
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from synthetic import synthetic_input, fill  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "../../BottleneckTensorTests/Fixtures/kernels")
os.makedirs(OUT, exist_ok=True)
T = lambda a: torch.from_numpy(np.ascontiguousarray(a))


def x(case, shape):
    return T(synthetic_input(case + ".x", shape))


def w(case, shape, suffix="w"):
    return T(fill(f"{case}.{suffix}", "weight", shape))


def b(case, n, suffix="b"):
    return T(fill(f"{case}.{suffix}", "bias", (n,)))


def same_pad(inp, k, s):
    ih, iw = inp.shape[2:]
    oh, ow = -(-ih // s), -(-iw // s)
    ph = max((oh - 1) * s + k - ih, 0)
    pw = max((ow - 1) * s + k - iw, 0)
    return F.pad(inp, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


def save(case, t):
    np.save(os.path.join(OUT, case + ".npy"), t.detach().numpy().astype(np.float32))


with torch.no_grad():
    c = "conv3x3_s1_p1_bias_relu"
    save(c, F.relu(F.conv2d(x(c, (2, 5, 9, 7)), w(c, (6, 5, 3, 3)), b(c, 6), stride=1, padding=1)))
    c = "conv7x7_s2_p3"
    save(c, F.conv2d(x(c, (1, 3, 17, 15)), w(c, (8, 3, 7, 7)), None, stride=2, padding=3))
    c = "conv1x1_s1_bias"
    save(c, F.conv2d(x(c, (2, 16, 5, 6)), w(c, (12, 16, 1, 1)), b(c, 12)))
    c = "conv1x1_s2"
    save(c, F.conv2d(x(c, (2, 16, 7, 7)), w(c, (8, 16, 1, 1)), None, stride=2))
    c = "conv3x3_s2_same"
    save(c, F.conv2d(same_pad(x(c, (1, 4, 8, 9)), 3, 2), w(c, (5, 4, 3, 3)), None, stride=2))
    c = "conv3x3_residual_relu"
    save(c, F.relu(F.conv2d(x(c, (1, 8, 6, 6)), w(c, (8, 8, 3, 3)), b(c, 8), padding=1)
                   + T(synthetic_input(c + ".r", (1, 8, 6, 6)))))
    # Shapes that exercise the GEMM blocking: K > 256 (two K slices), 16- and 8-wide column panels
    # plus a scalar tail, row counts that are not multiples of 6 or of the 96-row block.
    c = "conv1x1_k300_n44_bias_residual_relu6"
    save(c, torch.clamp(F.conv2d(x(c, (2, 300, 11, 9)), w(c, (44, 300, 1, 1)), b(c, 44))
                        + T(synthetic_input(c + ".r", (2, 44, 11, 9))), 0, 6))
    c = "conv3x3_k288_n24_s1_p1_bias_relu"
    save(c, F.relu(F.conv2d(x(c, (1, 32, 13, 14)), w(c, (24, 32, 3, 3)), b(c, 24), padding=1)))
    # A batch-1 7x7 map: 49 rows, a one-row remainder after 8 six-row tiles, against five 16-wide
    # panels and an 8-wide one.
    c = "conv1x1_k200_n88_7x7_bias_residual_relu6"
    save(c, torch.clamp(F.conv2d(x(c, (1, 200, 7, 7)), w(c, (88, 200, 1, 1)), b(c, 88))
                        + T(synthetic_input(c + ".r", (1, 88, 7, 7))), 0, 6))
    # Strided 1x1 layers run tile-major with rows read at the input pixels. 512 channels at stride
    # 2: adjacent rows 4 KiB apart, so each tile's rows are copied first; 9 rows (a six-row tile and
    # a three-row one) against a 16- and an 8-wide panel, bias + ReLU.
    c = "conv1x1_s2_c512_n24_bias_relu"
    save(c, F.relu(F.conv2d(x(c, (1, 512, 5, 6)), w(c, (24, 512, 1, 1)), b(c, 24), stride=2)))
    # 64 channels at stride 2, read in place: 7x7 outputs per image, so the ninth tile spans both images.
    c = "conv1x1_s2_c64_n40_13x13"
    save(c, F.conv2d(x(c, (2, 64, 13, 13)), w(c, (40, 64, 1, 1)), None, stride=2))
    # K = 1024 with rows 4 KiB apart: tile-major in two 512-wide k slices (partial sums in the output),
    # each tile's slice copied first; 15 rows (two six-row tiles and a three-row one), 16/16/8 panels,
    # bias + residual + ReLU in the first and last slices.
    c = "conv1x1_k1024_n40_bias_residual_relu"
    save(c, F.relu(F.conv2d(x(c, (1, 1024, 3, 5)), w(c, (40, 1024, 1, 1)), b(c, 40))
                   + T(synthetic_input(c + ".r", (1, 40, 3, 5)))))
    # The same slicing for a stride-2 shortcut of 1024 channels (rows read at the input pixels, copied).
    c = "conv1x1_s2_k1024_n24"
    save(c, F.conv2d(x(c, (1, 1024, 5, 5)), w(c, (24, 1024, 1, 1)), None, stride=2))
    # Winograd F(4x4, 3x3) path: 13x11 maps (the last tile row and column overhang the image),
    # 40 output channels (16 + 16 + 8 panels), batch 2, bias + residual + ReLU fused.
    c = "wino3x3_c64_n40_13x11_bias_residual_relu"
    save(c, F.relu(F.conv2d(x(c, (2, 64, 13, 11)), w(c, (40, 64, 3, 3)), b(c, 40), padding=1)
                   + T(synthetic_input(c + ".r", (2, 40, 13, 11)))))
    # Cin = 320 (two K slices of the GEMM), folded BN (scale multiplied into the transformed weights),
    # TF "SAME" padding (resolves to 1), ReLU6; 7x10 map = 2x3 tiles, most of them overhanging.
    c = "wino3x3_c320_n48_7x10_same_bn_relu6"
    gamma, beta = T(fill(c + ".g", "bn_weight", (48,))), T(fill(c + ".be", "bn_bias", (48,)))
    mean, var = T(fill(c + ".m", "bn_mean", (48,))), T(fill(c + ".v", "bn_var", (48,)))
    y = F.conv2d(same_pad(x(c, (1, 320, 7, 10)), 3, 1), w(c, (48, 320, 3, 3)), None)
    save(c, F.relu6(F.batch_norm(y, mean, var, gamma, beta, False, 0.0, 1e-5)))
    c = "conv3x3_bn_relu"
    gamma, beta = T(fill(c + ".g", "bn_weight", (6,))), T(fill(c + ".be", "bn_bias", (6,)))
    mean, var = T(fill(c + ".m", "bn_mean", (6,))), T(fill(c + ".v", "bn_var", (6,)))
    y = F.conv2d(x(c, (2, 3, 6, 5)), w(c, (6, 3, 3, 3)), None, padding=1)
    save(c, F.relu(F.batch_norm(y, mean, var, gamma, beta, False, 0.0, 1e-5)))
    c = "depthwise3x3_s1_same_bias_relu6"
    save(c, F.relu6(F.conv2d(same_pad(x(c, (2, 12, 7, 8)), 3, 1), w(c, (12, 1, 3, 3)), b(c, 12), groups=12)))
    c = "depthwise5x5_s2_same"
    save(c, F.conv2d(same_pad(x(c, (1, 20, 9, 10)), 5, 2), w(c, (20, 1, 5, 5)), None, stride=2, groups=20))
    # 92 channels = 5 16-channel blocks + 8 + 4 scalar; a 7x7 map, so every 4-pixel segment reads window
    # columns outside the image (11 pixels: 4 + 4 + 3).
    c = "depthwise5x5_s1_same_c92_bias_relu6"
    save(c, F.relu6(F.conv2d(same_pad(x(c, (1, 92, 7, 11)), 5, 1), w(c, (92, 1, 5, 5)), b(c, 92), groups=92)))
    c = "depthwise3x3_s2_same_c12_relu"
    save(c, F.relu(F.conv2d(same_pad(x(c, (2, 12, 12, 16)), 3, 2), w(c, (12, 1, 3, 3)), b(c, 12), stride=2, groups=12)))
    # 27 columns at stride 2: 14 output pixels per row (4 + 4 + 3 + 3-pixel segments) and 20 channels
    # (a 16-channel block plus a 4-channel scalar tail).
    c = "depthwise5x5_s2_same_w27_bias"
    save(c, F.conv2d(same_pad(x(c, (2, 20, 11, 27)), 5, 2), w(c, (20, 1, 5, 5)), b(c, 20), stride=2, groups=20))
    # A 7x7 window: the generic register-blocked path (no fixed-window specialisation).
    c = "depthwise7x7_s1_same_c24_relu6"
    save(c, F.relu6(F.conv2d(same_pad(x(c, (1, 24, 9, 16)), 7, 1), w(c, (24, 1, 7, 7)), b(c, 24), groups=24)))
    # 21 columns under a 3x3/1 window: interior segments that address pixels directly between two edge ones.
    c = "depthwise3x3_s1_same_w21_c16_relu6"
    save(c, F.relu6(F.conv2d(same_pad(x(c, (2, 16, 5, 21)), 3, 1), w(c, (16, 1, 3, 3)), b(c, 16), groups=16)))
    # 200 channels (12 16-channel blocks + 8): enough that each channel block sweeps the row in turn.
    c = "depthwise5x5_s1_same_c200_bias_relu6"
    save(c, F.relu6(F.conv2d(same_pad(x(c, (1, 200, 6, 9)), 5, 1), w(c, (200, 1, 5, 5)), b(c, 200), groups=200)))
    # Rows of 3 output pixels, too narrow for a 4-pixel segment: a fixed window on the generic path.
    c = "depthwise5x5_s1_same_w3_c40_bias"
    save(c, F.conv2d(same_pad(x(c, (1, 40, 5, 3)), 5, 1), w(c, (40, 1, 5, 5)), b(c, 40), groups=40))
    # EfficientNet-Lite0-like row widths (multiples of 7) with 64-80 channels, one case per window:
    # 72 channels = 4 16-channel blocks + one 8-channel block; 14 output pixels (4 + 4 + 3 + 3).
    c = "depthwise3x3_s1_same_w14_c72_bias_relu6"
    save(c, F.relu6(F.conv2d(same_pad(x(c, (2, 72, 6, 14)), 3, 1), w(c, (72, 1, 3, 3)), b(c, 72), groups=72)))
    # Stride 2 on 28 columns (14 output pixels) with 66 channels: a 2-channel scalar tail.
    c = "depthwise5x5_s2_same_w28_c66_relu"
    save(c, F.relu(F.conv2d(same_pad(x(c, (1, 66, 9, 28)), 5, 2), w(c, (66, 1, 5, 5)), b(c, 66), stride=2, groups=66)))
    # 35 columns under 5x5/1: interior segments between edge ones; 80 channels make the footprint
    # large enough for the channel-major sweep.
    c = "depthwise5x5_s1_same_w35_c80_bias_relu6"
    save(c, F.relu6(F.conv2d(same_pad(x(c, (1, 80, 7, 35)), 5, 1), w(c, (80, 1, 5, 5)), b(c, 80), groups=80)))
    # 3x3/2 to a 7-pixel row (14 columns, 64 channels): a 4-pixel and a 3-pixel segment.
    c = "depthwise3x3_s2_same_w14_c64"
    save(c, F.conv2d(same_pad(x(c, (2, 64, 8, 14)), 3, 2), w(c, (64, 1, 3, 3)), None, stride=2, groups=64))
    c = "maxpool3_s2_p1"
    save(c, F.max_pool2d(x(c, (2, 10, 9, 8)), 3, 2, 1))
    c = "avgpool3_s2_p1"
    save(c, F.avg_pool2d(x(c, (1, 9, 7, 7)), 3, 2, 1, count_include_pad=True))
    c = "avgpool2_s2"
    save(c, F.avg_pool2d(x(c, (1, 9, 6, 7)), 2, 2))
    c = "adaptive_avg_5x7_to_3x3"
    save(c, F.adaptive_avg_pool2d(x(c, (2, 11, 5, 7)), (3, 3)))
    c = "adaptive_avg_2x2_to_7x7"
    save(c, F.adaptive_avg_pool2d(x(c, (1, 9, 2, 2)), (7, 7)))
    c = "global_avg"
    save(c, x(c, (2, 13, 3, 5)).mean(dim=(2, 3)))
    c = "global_max"
    save(c, x(c, (2, 13, 3, 5)).amax(dim=(2, 3)))
    c = "linear_relu"
    save(c, F.relu(F.linear(x(c, (3, 20)), w(c, (7, 20)), b(c, 7))))
    c = "softmax"
    save(c, F.softmax(x(c, (3, 10)) * 5, dim=1))
    c = "batchnorm"
    gamma, beta = T(fill(c + ".g", "bn_weight", (6,))), T(fill(c + ".be", "bn_bias", (6,)))
    mean, var = T(fill(c + ".m", "bn_mean", (6,))), T(fill(c + ".v", "bn_var", (6,)))
    save(c, F.batch_norm(x(c, (2, 6, 3, 4)), mean, var, gamma, beta, False, 0.0, 1e-3))
print("wrote", len(os.listdir(OUT)), "fixtures to", os.path.normpath(OUT))
