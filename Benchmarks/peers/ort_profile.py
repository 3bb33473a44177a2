"""Per-node times of ONNX Runtime on a peer model, to set beside `bottleneck bench --profile`'s per-layer
table (which layers the peer runs faster, and by how much).

  python ort_profile.py --model resnet50 --batch 32 [--threads 2] [--passes 3] [--onnx-dir DIR]

The ONNX file must exist: `python peer.py --engine onnx --model M --batch B --export-only` writes it.
Prints each node that took time (milliseconds per pass, share, ONNX Runtime's op and output shape)
in graph order, then the total. The session is peer.py's (same threads and settings as the timed runs);
ORT's own profiler records the times (SessionOptions.enable_profiling);
its JSON file is written to the system temp folder and removed afterwards.
"""
import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnxruntime as ort

from peer import onnx_path, ort_session


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--onnx-dir", default="/tmp/bottleneck-peers")
    a = ap.parse_args()
    path = onnx_path(a.onnx_dir, a.model, a.batch)
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: run `python peer.py --engine onnx --model {a.model} "
                         f"--batch {a.batch} --export-only` first")
    session = ort_session(path, a.threads, profile_prefix=os.path.join(tempfile.gettempdir(), "bottleneck-ort-profile"))
    x = np.random.default_rng(0).random((a.batch, 3, 224, 224), dtype=np.float32)
    name = session.get_inputs()[0].name
    session.run(None, {name: x})  # warm-up pass, not counted below
    for _ in range(a.passes):
        session.run(None, {name: x})
    profile = session.end_profiling()
    with open(profile) as f:
        events = json.load(f)
    os.remove(profile)
    # Every pass, the warm-up included, records one event per node; drop the first pass's.
    per_node = collections.OrderedDict()
    info = {}
    seen = collections.Counter()
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        seen[node] += 1
        if seen[node] == 1:
            continue
        per_node[node] = per_node.get(node, 0) + e["dur"]
        args = e.get("args", {})
        info[node] = (args.get("op_name", "?"), args.get("output_type_shape", ""))
    total = sum(per_node.values())
    for node, us in per_node.items():
        if us == 0:
            continue
        op, shape = info[node]
        print(f"{us / a.passes / 1e3:9.2f} ms/pass {100 * us / total:5.1f}%  {op:16s} {node[:48]:48s} {shape}")
    print(f"total {total / a.passes / 1e3:.1f} ms/pass in nodes ({a.model}, batch {a.batch}, {a.threads} threads, "
          f"onnxruntime {ort.__version__})")


if __name__ == "__main__":
    main()
