# Writes the 1000 ImageNet-1k class names, one per line in class-index order (line 1 = class 0),
# from torchvision's weight metadata.
# Rerun: /opt/refvenv/bin/python Tests/Reference/weights/make_labels.py
# Output: Sources/BottleneckModels/Resources/imagenet_classes.txt
import os

from torchvision.models import ResNet50_Weights

cats = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
assert len(cats) == 1000 and cats[310] == "ant" and cats[309] == "bee"
assert all("\n" not in c for c in cats)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "Sources", "BottleneckModels", "Resources",
                   "imagenet_classes.txt")
with open(out, "w") as f:
    f.write("\n".join(cats) + "\n")
print("wrote", len(cats), "labels")
