"""Re-create the built-in demo models: `python -m xaicli.models.builtin.train`.

Deterministic (fixed seeds, synthetic data from shapes.make_sample with seeds ≥ 100000,
so demo and test images, seeds < 100000, are never trained on). A few minutes on a
2-core CPU. Rerunning gives the committed weights byte for byte (checked) with the
default threads: 2 for the segmenter (~4 min), 1 for the classifier (~30 s). Writes
shapes-seg/ (smp save_pretrained) and shapes-cls/ (transformers save_pretrained +
preprocessor_config.json), each with an xai.json sidecar.

shapes-cls is a transformers ResNet, not a ConvNeXt: ConvNeXt's LayerNorm after the
global pooling makes its last-stage Grad-CAM sum to zero over positions before the
ReLU (the LayerNorm Jacobian is orthogonal to the pooled features), so whether the
object or the background comes out positive is up to the training run; a ConvNeXt
trained here put the Grad-CAM peak in the object on 1-71 of 100 images, this ResNet
on 99. Pooling then a linear layer makes Grad-CAM the class activation map.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from xaicli.models.builtin.shapes import CLS_LABELS, CLS_SIZE, SEG_LABELS, SEG_SIZE, make_sample
from xaicli.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

HERE = Path(__file__).parent
TRAIN_SEED0 = 100_000


def _batch(task: str, seeds, training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, targets = [], []
    for s in seeds:
        img, mask, label = make_sample(int(s), task, vary_background=training)
        x = torch.from_numpy(img).float() / 255
        x = x[None].expand(3, -1, -1) if x.ndim == 2 else x.permute(2, 0, 1)
        imgs.append(x)
        targets.append(torch.from_numpy(mask).float()[None] if task == "segmentation" else torch.tensor(label))
    x = torch.stack(imgs)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std, torch.stack(targets)


def build_seg():
    import segmentation_models_pytorch as smp

    return smp.UnetPlusPlus(encoder_name="tu-resnet10t", encoder_depth=3, decoder_channels=(32, 16, 8),
                            encoder_weights=None, classes=1)


def build_cls():
    """Stem /4, two basic stages: the last stage is 8x8 at 64x64, like ResNet-50's 7x7 at 224x224."""
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[32, 64], depths=[2, 2], layer_type="basic",
                       num_labels=len(CLS_LABELS), id2label=dict(enumerate(CLS_LABELS)),
                       label2id={n: i for i, n in enumerate(CLS_LABELS)})
    return ResNetForImageClassification(cfg)


def seg_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice loss of mask logits `out` against 0/1 masks `y`."""
    p = torch.sigmoid(out)
    dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    return F.binary_cross_entropy_with_logits(out, y) + dice


def train(task: str, steps: int, batch: int, lr: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_seg() if task == "segmentation" else build_cls()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    t0 = time.time()
    for step in range(steps):
        seeds = range(TRAIN_SEED0 + step * batch, TRAIN_SEED0 + (step + 1) * batch)
        x, y = _batch(task, seeds, training=task == "classification")
        out = model(x)
        if task == "segmentation":
            loss = seg_loss(out, y)
        else:
            loss = F.cross_entropy(out.logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"{task} step {step} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    return model.eval()


@torch.no_grad()
def evaluate(task: str, model, n: int = 200) -> float:
    x, y = _batch(task, range(n))
    out = model(x)
    if task == "segmentation":
        pred = (out > 0).float()
        return float((2 * (pred * y).sum() / (pred.sum() + y.sum())).item())
    return float((out.logits.argmax(1) == y).float().mean().item())


def save_seg(model, folder: Path) -> None:
    model.save_pretrained(str(folder))
    (folder / "README.md").unlink(missing_ok=True)
    (folder / "xai.json").write_text(json.dumps({"labels": list(SEG_LABELS), "size": [SEG_SIZE, SEG_SIZE],
                                                 "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}, indent=1))


def save_cls(model, folder: Path) -> None:
    from transformers import ConvNextImageProcessor

    model.save_pretrained(str(folder))
    ConvNextImageProcessor(size={"shortest_edge": CLS_SIZE}, crop_pct=1.0, image_mean=list(IMAGENET_MEAN),
                           image_std=list(IMAGENET_STD)).save_pretrained(str(folder))
    (folder / "xai.json").write_text(json.dumps({"labels": list(CLS_LABELS), "size": [CLS_SIZE, CLS_SIZE]}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", choices=["segmentation", "classification"])
    ap.add_argument("--steps", type=int, default=0, help="override the step count")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (default: 2 for the segmenter, 1 for the classifier, as the committed "
                         "weights were made; float sums, and so the weights, depend on it)")
    args = ap.parse_args()
    if args.only in (None, "segmentation"):
        torch.set_num_threads(args.threads or 2)
        m = train("segmentation", args.steps or 500, 16, 3e-3)
        print(f"segmentation dice on seeds 0-199: {evaluate('segmentation', m):.4f}")
        save_seg(m, HERE / "shapes-seg")
    if args.only in (None, "classification"):
        torch.set_num_threads(args.threads or 1)
        m = train("classification", args.steps or 300, 32, 4e-3)
        print(f"classification accuracy on seeds 0-199: {evaluate('classification', m):.4f}")
        save_cls(m, HERE / "shapes-cls")


if __name__ == "__main__":
    main()
