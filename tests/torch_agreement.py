#!/usr/bin/env python3
"""ds-train and PyTorch side by side: the same MLP and the same small CNN,
started from the same weights, trained 20 SGD steps on the same batches; the
loss of every step must agree within 1e-4 relative.

    torch_agreement.py [--steps N] [--keep DIR]

ds-train writes the initial model (--epochs 0), PyTorch reads its tensors by
name (the zoo uses PyTorch's state_dict names), and both train on one
stream in its own order (ds-train --no-shuffle) with dropout off on both
sides (ds-train --dropout 0, nn.Dropout(0)): dropout masks come from
different generators and cannot agree, so the comparison is of everything
else.  The per-step losses of ds-train come from its --log.

Exit status 0 when every step agrees, 1 when one does not, 77 (automake's
skip) when `import torch` fails, e.g. without Debian's python3-torch.
"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except Exception as e:  # noqa: BLE001 - any failure to import means skip
    print("skipped: python3-torch is not installed (%s)" % e)
    sys.exit(77)

BATCH = 16
LR = 0.01
MOMENTUM = 0.9
TOLERANCE = 1e-4


def write_stream(path, n):
    """One frame of n 28x28 gray images: class k has a bright band of rows."""
    rng = random.Random(1)
    y = [i % 10 for i in range(n)]
    x = bytes(220 if p // 28 in (2 * k + 4, 2 * k + 5) else rng.randrange(60)
              for k in y for p in range(784))
    yb = struct.pack("<%di" % n, *y)
    head = {"y": {"dtype": "I32", "shape": [n], "data_offsets": [0, len(yb)]},
            "x": {"dtype": "U8", "shape": [n, 28, 28, 1],
                  "data_offsets": [len(yb), len(yb) + len(x)]},
            "__metadata__": {"ds.format": "frame/1",
                             "ds.labels": json.dumps([str(i) for i in range(10)]),
                             "ds.preprocess": json.dumps({"kind": "image", "width": 28, "height": 28,
                                                          "channels": 1, "scale": 1 / 255})}}
    h = json.dumps(head).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + yb + x)
    return x, y


def read_model(path):
    """The F32 tensors of a .dsm, by name."""
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        b, e = t["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[base + b:base + e]),
                                     dtype=torch.float32).reshape(t["shape"]).clone()
    return out


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNNSmall(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.dropout = nn.Dropout(0.0)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


def ds_losses(tmp, arch, data, steps):
    init = os.path.join(tmp, arch + ".init.dsm")
    log = os.path.join(tmp, arch + ".log.jsonl")
    common = ["--data", data, "--threads", "1", "-q"]
    subprocess.run(["ds-train", "--arch", arch, "--epochs", "0", "--seed", "1", "-o", init] + common,
                   check=True)
    subprocess.run(["ds-train", "--finetune", init, "--epochs", "1", "--max-steps", str(steps),
                    "--batch", str(BATCH), "--optimizer", "sgd", "--lr", str(LR),
                    "--momentum", str(MOMENTUM), "--weight-decay", "0", "--no-shuffle",
                    "--dropout", "0", "--log", log, "-o", os.path.join(tmp, arch + ".dsm")] + common,
                   check=True)
    losses = [json.loads(line)["loss"] for line in open(log) if '"event":"step"' in line]
    return init, losses


def torch_losses(model, init, x, y, steps):
    model.load_state_dict(read_model(init), strict=True)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=0)
    scale = torch.tensor(1 / 255, dtype=torch.float32)
    images = torch.frombuffer(bytearray(x), dtype=torch.uint8).reshape(-1, 28, 28, 1)
    images = images.permute(0, 3, 1, 2).float() * scale
    labels = torch.tensor(y, dtype=torch.long)
    model.train()
    losses = []
    for s in range(steps):
        xb = images[s * BATCH:(s + 1) * BATCH]
        yb = labels[s * BATCH:(s + 1) * BATCH]
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main():
    steps = 20
    keep = None
    args = sys.argv[1:]
    while args:
        a = args.pop(0)
        if a == "--steps":
            steps = int(args.pop(0))
        elif a == "--keep":
            keep = args.pop(0)
        else:
            print("usage: torch_agreement.py [--steps N] [--keep DIR]", file=sys.stderr)
            return 2
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tmp = keep or tempfile.mkdtemp(prefix="torch_agreement.")
    os.makedirs(tmp, exist_ok=True)
    failed = False
    try:
        data = os.path.join(tmp, "toy.dst")
        x, y = write_stream(data, steps * BATCH)
        for arch, model in (("mlp", MLP()), ("cnn-small", CNNSmall())):
            init, ours = ds_losses(tmp, arch, data, steps)
            theirs = torch_losses(model, init, x, y, steps)
            if len(ours) != steps:
                print("%s: ds-train logged %d steps, expected %d" % (arch, len(ours), steps))
                failed = True
                continue
            worst = 0.0
            for s, (a, b) in enumerate(zip(ours, theirs)):
                rel = abs(a - b) / max(abs(b), 1e-12)
                worst = max(worst, rel)
                bad = rel > TOLERANCE
                failed |= bad
                if bad:
                    print("%s step %2d: ds-train %.7f torch %.7f rel %.2e%s"
                          % (arch, s + 1, a, b, rel, "  <- differs" if bad else ""))
            print("%s: %d steps, largest relative difference %.2e (limit %.0e)"
                  % (arch, steps, worst, TOLERANCE))
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
