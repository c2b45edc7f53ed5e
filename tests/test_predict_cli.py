"""`xai predict` end to end: the record stream through real `tar`, and one-line errors
that leave no output behind (stdout, -o FILE.tar, -o DIR/)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_models import smp_unet_resnet18, write_png
from conftest import no_record_out, npz_members

SEG = "builtin:shapes-seg"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _xai(*args: str) -> list[str]:
    """The installed console script when there is one, else `python -m xaicli`."""
    script = Path(sys.executable).with_name("xai")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "xaicli", *args]


@pytest.fixture(scope="module")
def seg_image(tmp_path_factory):
    from xaicli.models.builtin.shapes import make_sample

    img, mask, _ = make_sample(11, "segmentation")
    path = tmp_path_factory.mktemp("seg") / "img.png"
    write_png(path, img)
    return path, img, mask


@pytest.mark.skipif(not all(shutil.which(t) for t in ("tar", "tee", "bash")), reason="no tar/tee/bash")
def test_predict_stream_through_tar(seg_image, tmp_path):
    path, img, mask = seg_image
    copy = tmp_path / "copy.tar"
    # A real pipe, as a user types it; tee keeps the bytes that went through it.
    pipeline = f"set -o pipefail; {shlex.join(_xai('predict', '-m', SEG, str(path)))} | tee {shlex.quote(str(copy))} | tar tvf -"
    proc = subprocess.run(["bash", "-c", pipeline], capture_output=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert [line.split()[-1] for line in lines] == [".xai-stream.json", "img.npz", ".xai-stream-end.json"], lines
    with tarfile.open(copy) as t:
        data = t.extractfile("img.npz").read()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"][()]))
        np.testing.assert_array_equal(npz["image"], img)
        logits, probs, pred = npz["pred/logits"], npz["pred/probs"], npz["pred/mask"]
    assert meta["schema"] == "xai.record/1" and meta["id"] == "img" and meta["task"] == "segmentation"
    assert meta["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["model"]["spec"] == SEG and meta["model"]["labels"] == ["blob"]
    assert [h["command"] for h in meta["history"]] == ["predict"]
    assert logits.shape == probs.shape == (1, 96, 96) and pred.shape == (96, 96)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-6)
    np.testing.assert_array_equal(pred, (probs[0] > 0.5).astype(np.uint8))
    assert (pred == mask).mean() > 0.9  # the demo model does find the blobs
    assert "Traceback" not in proc.stderr.decode()


def test_predict_logits_match_the_model_run_directly(cli, seg_image):
    import segmentation_models_pytorch as smp

    from xaicli.models.builtin import builtin_path

    path, img, _ = seg_image
    r = cli(["predict", "-m", SEG, path])
    assert r.exit_code == 0, r.stderr
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as t:
        with np.load(t.extractfile("img.npz"), allow_pickle=False) as npz:
            logits = npz["pred/logits"]
    model = smp.from_pretrained(str(builtin_path("shapes-seg"))).eval()
    x = torch.from_numpy(img.astype(np.float32) / 255)[None, None].repeat(1, 3, 1, 1)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = model(x)[0].numpy()
    np.testing.assert_allclose(logits, want, atol=1e-4)


def test_predict_segmenter_json(cli, seg_image):
    path, _, _ = seg_image
    r = cli(["predict", "-m", SEG, "--json", path, path.parent])
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(s) for s in r.output.splitlines()]
    # the folder holds only `path`: a file named twice is read once (one id, one line)
    assert len(lines) == 1 and lines[0]["task"] == "segmentation"
    assert set(lines[0]["area_fraction"]) == {"blob"} and lines[0]["mask_pixels"] > 0


class _ManyClasses(torch.nn.Module):
    """300 classes: 257 where the image is bright, 3 elsewhere (uint8 would wrap 257 to 1)."""

    def forward(self, x):
        bright = (x.mean(1, keepdim=True) > 0).float()
        logits = torch.zeros(x.shape[0], 300, *x.shape[-2:])
        logits[:, 257:258] = 10 * bright
        logits[:, 3:4] = 5.0
        return logits


def test_a_segmenter_of_more_than_256_classes_keeps_its_class_indices(cli, tmp_path):
    model = tmp_path / "many.pt"
    torch.jit.trace(_ManyClasses(), torch.zeros(1, 3, 32, 32)).save(str(model))
    img = np.zeros((32, 32, 3), np.uint8)
    img[8:16, 8:24] = 255                                    # 128 bright pixels
    write_png(tmp_path / "img.png", img)
    r = cli(["predict", "-m", model, "--mean", "0.5", "--std", "0.5", tmp_path / "img.png", "-o", f"{tmp_path}/out/"])
    assert r.exit_code == 0, r.stderr
    with np.load(tmp_path / "out" / "img.npz") as npz:
        mask = npz["pred/mask"]
    assert set(np.unique(mask)) == {3, 257} and (mask == 257).sum() == 128
    r = cli(["predict", "-m", model, "--mean", "0.5", "--std", "0.5", "--json", tmp_path / "img.png"])
    fractions = json.loads(r.output)["area_fraction"]
    assert fractions["class_257"] == 128 / 1024 and fractions["class_1"] == 0


def test_json_top3_holds_three_whatever_top_k(cli, tmp_path):
    from xaicli.models.builtin.shapes import make_sample

    img, _, _ = make_sample(3, "classification")
    write_png(tmp_path / "c.png", img)
    line = json.loads(cli(["predict", "-m", "builtin:shapes-cls", "--json", "--top-k", "1", tmp_path / "c.png"]).output)
    assert len(line["top"]) == 1 and len(line["top3"]) == 3
    probs = line["probabilities"]
    assert [t["label"] for t in line["top3"]] == sorted(probs, key=probs.get, reverse=True)
    assert line["top3"][0]["label"] == line["predicted_class"]


def test_version():
    from xaicli import __version__

    proc = subprocess.run([sys.executable, "-m", "xaicli", "--version"], capture_output=True, text=True, env=ENV,
                          timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"xai {__version__}"
    assert proc.stderr == ""


# -- errors: one line, exit 1 or 2, nothing left behind ------------------------------------

@pytest.fixture(scope="module")
def cases(tmp_path_factory, seg_image):
    """name → (args, stdin bytes); every case fails before a complete output exists."""
    from conftest import invoke

    d = tmp_path_factory.mktemp("bad")
    good = seg_image[0]
    (d / "notes.txt").write_text("not an image\n")
    (d / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    twin = d / "twin.png"
    shutil.copyfile(good, twin)  # a second input (the same path twice is read once)
    stream = invoke(["predict", "-m", SEG, good, twin]).stdout
    with tarfile.open(fileobj=io.BytesIO(stream)) as t:
        second = npz_members(t)[1]
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps({"schema": "xai.record/2", "id": "future"})),
             image=np.zeros((32, 32), np.uint8))
    (d / "future.npz").write_bytes(buf.getvalue())
    img64 = write_png(d / "img64.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    torch.save(smp_unet_resnet18(classes=2).state_dict(), d / "unet_r18.pth")
    return {
        "missing image": (["-m", SEG, good, d / "missing.png"], None),
        "text file": (["-m", SEG, good, d / "notes.txt"], None),
        "garbage png": (["-m", SEG, good, d / "garbage.png"], None),
        "empty stdin": (["-m", SEG, "-"], b""),
        "empty stdin, no args": (["-m", SEG], b""),
        "truncated at a member boundary": (["-m", SEG, "-"], stream[:second.offset]),
        "truncated mid-member": (["-m", SEG, "-"], stream[:second.offset_data + second.size // 2]),
        "unknown schema": (["-m", SEG, good, d / "future.npz"], None),
        "missing model dir": (["-m", d / "no_such_model", good], None),
        "state dict not fitting --arch": (["-m", d / "unet_r18.pth", "--arch", "unet:resnet34", img64], None),
        "unknown --arch": (["-m", d / "unet_r18.pth", "--arch", "nosuchnet:resnet18", img64], None),
        "--device cuda without CUDA": (["-m", SEG, "--device", "cuda", good], None),
    }


CASES = ["missing image", "text file", "garbage png", "empty stdin", "empty stdin, no args",
         "truncated at a member boundary", "truncated mid-member", "unknown schema", "missing model dir",
         "state dict not fitting --arch", "unknown --arch", "--device cuda without CUDA"]


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("output", ["stdout", "file.tar", "dir/"])
@pytest.mark.parametrize("case", CASES)
def test_errors_are_one_line_and_leave_nothing(cli, tmp_path, cases, case, output):
    if case == "--device cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    args, data = cases[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    extra = {"stdout": [], "file.tar": ["-o", out_dir / "result.tar"], "dir/": ["-o", f"{out_dir}/recs/"]}[output]
    r = cli(["predict", *extra, *args], input=data)
    assert r.exit_code in (1, 2), (r.exit_code, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("xai: error:")
    assert "Traceback" not in r.stderr and "internal error" not in lines[0]
    no_record_out(r.stdout, lines[0])
    leftovers = [p for p in _tree(out_dir) if p != "recs"]  # an empty records folder may remain
    assert leftovers == [], leftovers


def test_error_with_debug_shows_the_traceback(cli, cases):
    args, data = cases["missing model dir"]
    r = cli(["--debug", "predict", *args], input=data)
    assert r.exit_code == 1
    assert "Traceback" in r.stderr and r.stderr.strip().splitlines()[-1].startswith("xai: error:")


def test_failed_run_keeps_an_existing_output_file(cli, tmp_path, cases):
    target = tmp_path / "result.tar"
    target.write_bytes(b"results of yesterday")
    args, data = cases["garbage png"]
    r = cli(["predict", "-o", target, *args], input=data)
    assert r.exit_code == 1
    assert target.read_bytes() == b"results of yesterday"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.tar"]
