#!/usr/bin/env python3
"""PyTorch CPU reference (the pip wheel: MKL + oneDNN) for bench_step's training steps.

The same steps as bench_step, built the same way: a backbone, a Linear head, mean cross-entropy,
SGD(lr=0.01, momentum=0.9), zero_grad(set_to_none=True).

  backbones: mlp       784 -> 256 -> 256 (ReLU after every layer), head 256 -> 10
             cnn       clarena's nn::CNN: [conv3x3(1->16, no bias)-BN-ReLU-maxpool2]
                       [conv3x3(16->32, no bias)-BN-ReLU-maxpool2] flatten Linear(1568->256) ReLU
             resnet18  torchvision's resnet18 layout on 1 channel, fc removed (512 features)
  modes:     trainable     forward + loss + backward + step
             frozen        backbone.requires_grad_(False) and eval(): only the head trains
             forward_only  torch.no_grad(): forward + loss

Timing: after --warmup steps, --reps steps each timed alone with perf_counter; the figure is the
median, in ms per step. Threads: --threads (default 2, as bench_step's CLARENA_NUM_THREADS).
Writes a table to stdout and JSON to --json.

Run it with the wheel set up by bench/setup_torch_cpu.sh:
  bench/setup_torch_cpu.sh && /tmp/torch-cpu/run bench/torch_cpu_step.py
Exit status: 0 measured; 4 PyTorch not installed.
"""
import argparse
import json
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("torch_cpu_step.py: PyTorch is not installed; nothing measured")
    sys.exit(4)


def mlp():
    layers, width = [], 784
    for h in (256, 256):
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(nn.Flatten(), *layers), width


def cnn():
    def stage(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2)]
    body = stage(1, 16) + stage(16, 32) + [nn.Flatten(), nn.Linear(32 * 7 * 7, 256), nn.ReLU()]
    return nn.Sequential(*body), 256


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def resnet18():
    layers = [nn.Conv2d(1, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), 512


BACKBONES = {"mlp": mlp, "cnn": cnn, "resnet18": resnet18}
MODES = ("trainable", "frozen", "forward_only")


def measure(name, mode, batch, warmup, reps):
    torch.manual_seed(0)
    backbone, features = BACKBONES[name]()
    head = nn.Linear(features, 10)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    if mode == "frozen":
        backbone.requires_grad_(False)
        backbone.eval()
    if batch == 1:  # training-mode batch norm needs two values per channel (as bench_step)
        backbone.eval()
    params = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)

    def step():
        if mode == "forward_only":
            with torch.no_grad():
                return F.cross_entropy(head(backbone(x)), y)
        loss = F.cross_entropy(head(backbone(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="mlp,cnn,resnet18")
    ap.add_argument("--batches", default="1,32,128")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"torch {torch.__version__}, MKL {torch.backends.mkl.is_available()}, oneDNN "
          f"{torch.backends.mkldnn.is_available()}, {torch.get_num_threads()} threads")
    print(f"{'backbone':10} {'batch':>6} {'mode':>13} {'median ms':>10}")
    for name in args.backbones.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for mode in MODES:
                ms = measure(name, mode, batch, args.warmup, args.reps)
                rows.append({"backbone": name, "batch": batch, "mode": mode, "median_ms": ms})
                print(f"{name:10} {batch:6d} {mode:>13} {ms:10.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
