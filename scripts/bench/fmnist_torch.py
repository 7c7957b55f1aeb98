"""The reference CNN of ds-train's benchmark in PyTorch: the same streams,
the same architecture and settings (AdamW lr 1e-3, weight decay 1e-4,
batch 64, inputs scaled to [0, 1], shuffled every epoch).  Prints one JSON
object per epoch."""
import json
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import dst  # noqa: E402


def main():
    train, test, epochs, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    x, y, labels = dst.load(train)
    tx, ty, _ = dst.load(test)
    # NHWC bytes -> NCHW floats in [0, 1]
    x = torch.from_numpy(x.astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
    tx = torch.from_numpy(tx.astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
    y, ty = torch.from_numpy(y.astype(np.int64)), torch.from_numpy(ty.astype(np.int64))
    c, h, w = x.shape[1:]
    model = nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, len(labels)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    n = x.shape[0]
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n)
        t0 = time.perf_counter()
        for i in range(0, n - 63, 64):
            idx = order[i:i + 64]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            correct = sum((model(tx[i:i + 1000]).argmax(1) == ty[i:i + 1000]).sum().item()
                          for i in range(0, tx.shape[0], 1000))
        print(json.dumps({"epoch": epoch + 1, "seconds": seconds, "images_per_s": (n // 64) * 64 / seconds,
                          "test_accuracy": correct / tx.shape[0]}), flush=True)


if __name__ == "__main__":
    main()
