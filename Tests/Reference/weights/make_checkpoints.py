# Writes the tiny checkpoint fixtures the Swift weight readers are tested against.
# Rerun: /opt/refvenv/bin/python Tests/Reference/weights/make_checkpoints.py
# Outputs (committed, a few KB): Tests/BottleneckModelsTests/Fixtures/weights/
#   tiny_zip.pth        torch.save (zip format, default since 1.6)
#   tiny_legacy.pth     torch.save(..., _use_new_zipfile_serialization=False)
#   tiny_nested.pth     zip format, {"state_dict": sd, "epoch": 3, "arch": "tiny"}
#   tiny.safetensors    safetensors.torch.save_file (contiguous copies)
#   tiny_fromtype.pth   {"w": arange(6).reshape(2, 3)} where w carries a Python attribute, so torch pickles it
#                       through torch._tensor._rebuild_from_type_v2
#   tiny_model-0.1.0-py3-none-any.whl + tiny_legacy.pth.sha256   a DEFLATE wheel holding tiny_legacy.pth
#   expected.json       {key: {"shape": [...], "dtype": "...", "values": [float32 values as decimals]}}
import collections
import json
import os

import torch
from safetensors.torch import save_file

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "BottleneckModelsTests", "Fixtures", "weights")
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(1234)


def rnd(*shape):
    return torch.randn(*shape, generator=g)


base = rnd(10, 4)
sd = collections.OrderedDict()
sd["conv.weight"] = rnd(4, 3, 3, 3)
sd["conv.bias"] = rnd(4)
sd["bn.running_mean"] = rnd(4)
sd["bn.num_batches_tracked"] = torch.tensor(17, dtype=torch.int64)
sd["param.weight"] = torch.nn.Parameter(rnd(2, 3), requires_grad=False)
sd["half.weight"] = (rnd(5, 3) * 3).to(torch.float16)
sd["bf16.weight"] = (rnd(2, 6) * 3).to(torch.bfloat16)
sd["double.weight"] = rnd(3).to(torch.float64) / 7
sd["scalar"] = torch.tensor(2.5)
sd["view.base"] = base
sd["view.rows"] = base[2:5]            # storage offset 8, contiguous, shares storage with view.base
sd["view.transposed"] = base.t()       # non-contiguous, strides (1, 4)
sd["view.slice"] = base[3:7, 1:3]      # offset 13, strides (4, 1), non-contiguous
sd["half.view"] = sd["half.weight"].t()[1:]  # non-contiguous fp16 view with offset

torch.save(sd, os.path.join(out, "tiny_zip.pth"))
torch.save(sd, os.path.join(out, "tiny_legacy.pth"), _use_new_zipfile_serialization=False)
torch.save({"state_dict": sd, "epoch": 3, "arch": "tiny"}, os.path.join(out, "tiny_nested.pth"))
save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, os.path.join(out, "tiny.safetensors"))

w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
w.note = "python attribute"
torch.save(collections.OrderedDict(w=w), os.path.join(out, "tiny_fromtype.pth"))

expected = collections.OrderedDict()
for k, v in sd.items():
    expected[k] = {
        "shape": list(v.shape),
        "dtype": str(v.dtype).replace("torch.", ""),
        "values": [float(x) for x in v.detach().to(torch.float32).reshape(-1).tolist()],
    }
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)
print("wrote", sorted(os.listdir(out)))

# A wheel-like zip with DEFLATE-compressed members (as PyPI wheels are), holding tiny_legacy.pth,
# for the fetch-from-wheel path.
import hashlib
import zipfile

with zipfile.ZipFile(os.path.join(out, "tiny_model-0.1.0-py3-none-any.whl"), "w", compression=zipfile.ZIP_DEFLATED) as z:
    z.writestr("tiny_model/__init__.py", "# tiny\n" * 50)
    z.write(os.path.join(out, "tiny_legacy.pth"), "tiny_model/models/tiny_legacy.pth")
with open(os.path.join(out, "tiny_legacy.pth.sha256"), "w") as f:
    f.write(hashlib.sha256(open(os.path.join(out, "tiny_legacy.pth"), "rb").read()).hexdigest() + "\n")
