"""Tiny models and input files for tests, built in milliseconds.

Importable from any test (pytest puts tests/ on sys.path). `TinyClassifier` and
`TinySegmenter` live here, not in a test file, so a whole module pickled by one test
unpickles by import path (`helpers_models.TinyClassifier`) in the CLI under test.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from conftest import npz_members

HF_LABELS = ["alpha", "beta", "gamma", "delta"]


# -- plain torch modules (pickle / TorchScript) ---------------------------------

class TinyClassifier(nn.Module):
    """conv → relu → global average pool → linear: (B, C, H, W) → (B, K) logits."""

    def __init__(self, classes: int = 3, channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x).relu()).flatten(1))


class TinySegmenter(nn.Module):
    """Two convs keeping the spatial size: (B, C, H, W) → (B, K, H, W) logits."""

    def __init__(self, classes: int = 2, channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.head = nn.Conv2d(4, classes, 1)

    def forward(self, x):
        return self.head(self.conv(x).relu())


def tiny_classifier(classes: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    return TinyClassifier(classes).eval()


def tiny_segmenter(classes: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return TinySegmenter(classes).eval()


class CreatesFile:
    """Pickles to "call open(path, 'w') when unpickled": loading it creates `path`."""

    def __init__(self, path: str | Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# -- segmentation-models-pytorch --------------------------------------------------

def smp_unet_resnet18(classes: int = 2, in_channels: int = 3, seed: int = 0):
    """A cheap smp model (default decoder), for the state-dict variants."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    return smp.Unet(encoder_name="resnet18", encoder_weights=None, classes=classes,
                    in_channels=in_channels).eval()


# -- Hugging Face ------------------------------------------------------------------

def save_tiny_convnext(folder: Path, labels=HF_LABELS, size: int = 32, seed: int = 0) -> Path:
    """ConvNeXt with custom id2label + its image processor, saved like a user's model."""
    import transformers
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    transformers.utils.logging.disable_progress_bar()
    cfg = ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=size,
                         id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)})
    torch.manual_seed(seed)
    ConvNextForImageClassification(cfg).eval().save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": size}, crop_pct=1.0,
                           image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)
    return folder


def save_tiny_vit(folder: Path, labels=HF_LABELS[:3], size: int = 32, seed: int = 0) -> Path:
    import transformers
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    transformers.utils.logging.disable_progress_bar()
    cfg = ViTConfig(image_size=size, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, id2label=dict(enumerate(labels)),
                    label2id={lab: i for i, lab in enumerate(labels)})
    torch.manual_seed(seed)
    ViTForImageClassification(cfg).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
    return folder


# -- maps ------------------------------------------------------------------------

def into_box(cam: np.ndarray, hw, box) -> np.ndarray:
    """A model-grid map onto the image grid, by hand: bilinear at each pixel centre's model coordinate."""
    h, w = cam.shape
    top, left, bottom, right = box
    iy = (np.arange(hw[0]) + 0.5 - top) * h / (bottom - top) - 0.5
    ix = (np.arange(hw[1]) + 0.5 - left) * w / (right - left) - 0.5
    iy_c, ix_c = np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)
    y0, x0 = np.floor(iy_c).astype(int), np.floor(ix_c).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (iy_c - y0)[:, None], (ix_c - x0)[None, :]
    out = (cam[y0][:, x0] * (1 - fy) * (1 - fx) + cam[y0][:, x1] * (1 - fy) * fx
           + cam[y1][:, x0] * fy * (1 - fx) + cam[y1][:, x1] * fy * fx)
    inside = ((np.arange(hw[0]) + 0.5 >= top) & (np.arange(hw[0]) + 0.5 <= bottom))[:, None] & \
             ((np.arange(hw[1]) + 0.5 >= left) & (np.arange(hw[1]) + 0.5 <= right))[None, :]
    return out * inside



# -- input files -----------------------------------------------------------------

def smooth_image(h: int, w: int, seed: int = 0, lo: int = 20, hi: int = 235) -> np.ndarray:
    """A photo-like image (smooth blobs and one edge) within [lo, hi]: a bicubic resize never leaves
    [0, 255] on it, so the processor's float output equals its uint8 one up to rounding."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(4):
            cy, cx, r = rng.random(3) * [1, 1, 0.3] + [0, 0, 0.05]
            img[..., c] += rng.random() * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2)
    img[:, w // 3:, 1] += 0.5
    img = (img - img.min()) / (img.max() - img.min())
    return (lo + img * (hi - lo)).astype(np.uint8)


def rgb_image(h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_png(path: Path, arr: np.ndarray) -> Path:
    """A PNG written by hand (any of gray/RGB/RGBA, 8 or 16 bit): independent of Pillow,
    which cannot write 16-bit colour."""
    arr = np.asarray(arr)
    h, w = arr.shape[:2]
    colour = 0 if arr.ndim == 2 else {2: 4, 3: 2, 4: 6}[arr.shape[2]]
    depth = 16 if arr.dtype == np.uint16 else 8
    rows = arr.reshape(h, -1).astype(">u2" if depth == 16 else "u1")
    raw = b"".join(b"\0" + rows[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return Path(path)


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2",
                slope: float | None = None, intercept: float | None = None, **elements) -> Path:
    """A minimal valid DICOM file (Secondary Capture, explicit VR little endian, 16 bits: uint16, or
    int16 when `pixels` is int16). `elements` sets further data elements by keyword (WindowCenter, ...)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    signed = np.asarray(pixels).dtype == np.int16
    pixels = np.ascontiguousarray(pixels, dtype=np.int16 if signed else np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "OT", "Test^Phantom", "0"
    if pixels.ndim == 3:                       # frames, rows, columns
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, int(signed)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return Path(path)


def stream_records(stdout: bytes) -> list[dict]:
    """The records of a tar stream as dicts of arrays, with `meta` parsed."""
    import io
    import json
    import tarfile

    out = []
    with tarfile.open(fileobj=io.BytesIO(stdout)) as t:
        for m in npz_members(t):
            with np.load(t.extractfile(m), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            arrays["meta"] = json.loads(str(arrays["meta"][()]))
            out.append(arrays)
    return out


# -- references for the methods with their own backward rules ---------------------

class ReluNet(nn.Module):
    """conv → ReLU → max-pool → conv → ReLU → mean → linear, ReLUs inplace. shared=True calls one
    nn.ReLU module twice (as torchvision's ResNet blocks do): Captum's DeepLift refuses that, its
    guided backprop takes it; shared=False is the same function with two modules."""

    def __init__(self, classes: int = 3, shared: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.act2 = self.act if shared else nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = self.act2(self.conv2(self.pool(self.act(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


def adapter_of(model: nn.Module, task: str = "classification", labels=("a", "b", "c"), size=None):
    """A ModelAdapter around a model built in the test (frozen, CPU), ImageNet-free preprocessing."""
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.preprocess import Preprocessing

    for p in model.parameters():
        p.requires_grad_(False)
    return ModelAdapter(LogitsModule(model.eval()), task, list(labels), Preprocessing(size=size), torch.device("cpu"))


class ScoreModule(nn.Module):
    """u ↦ Σ W·logits(normalize(u)) per row: an adapter's target score on unit images as one
    nn.Module, since Captum's guided backprop, deconvolution and DeepLift hook the modules of
    the model they are given."""

    def __init__(self, adapter, weight):
        super().__init__()
        self.net = adapter.net
        self.adapter = adapter
        self.register_buffer("weight", torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, u):
        return (self.adapter.forward(self.adapter.normalize(u)) * self.weight).flatten(1).sum(1)


def save_unetpp_resnet18(folder: Path, seed: int = 0) -> Path:
    """smp U-Net++ with torchvision's resnet18 encoder (inplace nn.ReLU modules, each block's called
    twice), 3 stages, 1 class, save_pretrained."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    smp.UnetPlusPlus(encoder_name="resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8),
                     classes=1).eval().save_pretrained(str(folder))
    return Path(folder)


def saved_with_image(root: Path, save, patch: bool = True, seed: int = 2):
    """(spec, png path, image, root) for CLI tests: the model `save(folder)` writes and a 64x64 RGB image
    beside it (with a bright patch where `patch`)."""
    image = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    if patch:
        image[16:40, 20:44] = 230
    return str(save(root / "model")), str(write_png(root / "img.png", image)), image, root
