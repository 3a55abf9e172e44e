#!/usr/bin/env python3
"""PyTorch eager reference for bench_step's training steps, timed on the GPU with CUDA events.

Mirrors bench_step / bench_libtorch: a backbone of Linear->ReLU layers (ReLU after every layer,
the last one included), a Linear head, mean cross-entropy, SGD(lr=0.01, momentum=0.9).

  models:  default  784 -> 256 -> 256, head 256 -> 10
           wide     1024 -> 4096 -> 4096, head 4096 -> 100
  batches: 128 and 4096
  and resnet18 (torch_cpu_step.py's, on [128, 1, 28, 28], head 512 -> 10) at batch 128, with
  cuDNN off (rows "resnet18": the reference for our im2col + cuBLAS convolutions) and on (rows
  "resnet18_cudnn"); frozen also puts the backbone in eval mode, as bench_step does.
  modes:   trainable     forward + loss + backward + SGD step (zero_grad(set_to_none=True))
           frozen        backbone.requires_grad_(False); only the head is trained
           forward_only  torch.no_grad(): forward + loss

Timed as bench_step times our engine: after `--warmup` steps, `--groups` groups of `--group`
steps run back to back, each group between one pair of CUDA events (no host sync inside a
group); the figure is the median over the groups of the group's time per step. TF32 is off by
default (our engine's default; `--tf32 on|both` adds TF32 rows). Writes a table to stdout and
JSON to --json (default $OUT/torch_step.json when OUT is set).

Exit status: 0 measured; 3 no CUDA device visible to PyTorch; 4 PyTorch not installed.
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch_step.py: PyTorch is not installed; nothing measured")
    sys.exit(4)

MODELS = {
    "default": ([784, 256, 256], 10),
    "wide": ([1024, 4096, 4096], 100),
}
MODES = ("trainable", "frozen", "forward_only")


class Convnet(torch.nn.Module):
    """torch_cpu_step.py's resnet18 backbone with a Linear head."""

    def __init__(self):
        super().__init__()
        from torch_cpu_step import resnet18  # the CPU reference's model, not a second copy
        self.backbone, features = resnet18()
        self.head = torch.nn.Linear(features, 10)

    def forward(self, x):
        return self.head(self.backbone(x))


class Mlp(torch.nn.Module):
    def __init__(self, widths, classes):
        super().__init__()
        self.backbone = torch.nn.Sequential(
            *[m for i in range(len(widths) - 1)
              for m in (torch.nn.Linear(widths[i], widths[i + 1]), torch.nn.ReLU())])
        self.head = torch.nn.Linear(widths[-1], classes)

    def forward(self, x):
        return self.head(self.backbone(x))


def time_config(model_name, batch, mode, groups, group, warmup, device):
    torch.manual_seed(0)
    if model_name == "resnet18":
        model, classes = Convnet().to(device), 10
        x = torch.randn(batch, 1, 28, 28, device=device)
    else:
        widths, classes = MODELS[model_name]
        model = Mlp(widths, classes).to(device)
        x = torch.randn(batch, widths[0], device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    if mode == "frozen":
        model.backbone.requires_grad_(False)
        model.backbone.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9) if mode != "forward_only" else None

    def step():
        if mode == "forward_only":
            with torch.no_grad():
                return F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(groups)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(groups)]
    for g in range(groups):
        starts[g].record()
        for _ in range(group):
            step()
        ends[g].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) / group for s, e in zip(starts, ends))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--group", type=int, default=10, help="steps per timed group")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--tf32", choices=("off", "on", "both"), default="off")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_step.py: no CUDA device visible to PyTorch; nothing measured")
        return 3
    device = torch.device("cuda")
    out_dir = os.environ.get("OUT")
    json_path = args.json or (os.path.join(out_dir, "torch_step.json") if out_dir else None)
    tf32_settings = {"off": [False], "on": [True], "both": [False, True]}[args.tf32]

    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name(0)}, ms per step: median "
          f"of {args.groups} groups of {args.group} back-to-back steps after {args.warmup} "
          f"warm-up steps (CUDA events)")
    print(f"{'model':8} {'batch':>6} {'tf32':>4} {'trainable ms':>13} {'frozen ms':>10} "
          f"{'fwd-only ms':>12} {'frozen/train':>13}")
    rows = []
    for tf32 in tf32_settings:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        for model_name in MODELS:
            for batch in (128, 4096):
                t = {mode: time_config(model_name, batch, mode, args.groups, args.group,
                                       args.warmup, device)
                     for mode in MODES}
                ratio = t["frozen"] / t["trainable"]
                rows.append({"model": model_name, "batch": batch, "tf32": tf32,
                             **{f"{m}_ms": t[m] for m in MODES}, "frozen_over_trainable": ratio})
                print(f"{model_name:8} {batch:>6} {'on' if tf32 else 'off':>4} "
                      f"{t['trainable']:>13.4f} {t['frozen']:>10.4f} {t['forward_only']:>12.4f} "
                      f"{ratio:>13.3f}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for cudnn in (False, True):
        torch.backends.cudnn.enabled = cudnn
        name = "resnet18_cudnn" if cudnn else "resnet18"
        t = {mode: time_config("resnet18", 128, mode, args.groups, args.group, args.warmup, device)
             for mode in MODES}
        ratio = t["frozen"] / t["trainable"]
        rows.append({"model": name, "batch": 128, "tf32": False, "cudnn": cudnn,
                     **{f"{m}_ms": t[m] for m in MODES}, "frozen_over_trainable": ratio})
        print(f"{name:8} {128:>6} {'off':>4} {t['trainable']:>13.4f} {t['frozen']:>10.4f} "
              f"{t['forward_only']:>12.4f} {ratio:>13.3f}")
    torch.backends.cudnn.enabled = True
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name(0),
                       "groups": args.groups, "group": args.group, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
