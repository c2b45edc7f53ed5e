"""LeGrad against torchcam 0.5's LeGrad on the same ViT, blocks and target, through the CLI, on a CNN
(one line), and with `stats --randomize`.

torchcam's LeGrad hooks `nn.MultiheadAttention` (torchvision's ViT); a Hugging Face ViT has its own
attention. So the reference runs on a torchvision VisionTransformer holding the tiny HF ViT's
weights (the two give the same logits, checked first), ours on the HF model.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import error_line
from helpers_models import write_png

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE, PATCH, DIM, HEADS, MLP, LAYERS = 32, 8, 32, 2, 64, 2


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """(HF adapter, torchvision twin, image, folder): a 2-block ViT saved as users do."""
    from torchvision.models import VisionTransformer
    from transformers import ViTConfig, ViTForImageClassification

    from xaicli.models.loader import load_model

    folder = tmp_path_factory.mktemp("legrad") / "vit"
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=SIZE, patch_size=PATCH, hidden_size=DIM, num_hidden_layers=LAYERS,
                    num_attention_heads=HEADS, intermediate_size=MLP, layer_norm_eps=1e-6,   # torchvision's eps
                    id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    hf = ViTForImageClassification(cfg).eval()
    with torch.no_grad():                 # untrained heads are ~0: make the scores differ across patches
        hf.classifier.weight.normal_(0, 1.0)
    hf.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": SIZE, "width": SIZE},
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    ad = load_model(str(folder), device="cpu")
    tv = VisionTransformer(SIZE, PATCH, LAYERS, HEADS, DIM, MLP, num_classes=3).eval()
    m = ad.net.model
    with torch.no_grad():
        emb = m.vit.embeddings
        tv.conv_proj.load_state_dict(emb.patch_embeddings.projection.state_dict())
        tv.class_token.copy_(emb.cls_token)
        tv.encoder.pos_embedding.copy_(emb.position_embeddings)
        for block, layer in zip(tv.encoder.layers, m.vit.layers):
            a = layer.attention
            block.ln_1.load_state_dict(layer.layernorm_before.state_dict())
            block.ln_2.load_state_dict(layer.layernorm_after.state_dict())
            block.self_attention.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
            block.self_attention.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
            block.self_attention.out_proj.load_state_dict(a.o_proj.state_dict())
            block.mlp[0].load_state_dict(layer.mlp.fc1.state_dict())
            block.mlp[3].load_state_dict(layer.mlp.fc2.state_dict())
        tv.encoder.ln.load_state_dict(m.vit.layernorm.state_dict())
        tv.heads.head.load_state_dict(m.classifier.state_dict())
    image = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return ad, tv, image, folder


def torchcam_maps(tv, blocks, x, classes):
    from torchcam.methods import LeGrad

    out = []
    with LeGrad(tv, [tv.encoder.layers[b] for b in blocks]) as extractor:
        tv(x)
        for i, c in enumerate(classes):
            cam = extractor(c, normalized=False, retain_graph=i < len(classes) - 1)[0]
            out.append(F.interpolate(cam[None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0])
    return torch.stack(out).detach().numpy()


@pytest.mark.parametrize("layers,blocks", [(["last"], [1]), (["block0", "last"], [0, 1])])
def test_equals_torchcam_on_the_same_weights(vit, layers, blocks):
    from xaicli.explain.cam import CamEngine
    from xaicli.explain.targets import Target
    from xaicli.models.layers import layer_table

    ad, tv, image, _ = vit
    x = ad.prepare(image)
    with torch.no_grad():
        np.testing.assert_allclose(tv(x).numpy(), ad.net(x).numpy(), rtol=1e-5, atol=1e-5)   # the same model
    (m,) = CamEngine(ad, layer_table(ad, (SIZE, SIZE)).resolve(layers), ["legrad"]).explain(
        image, [Target("class", 0, "a"), Target("class", 2, "c")])
    ref = torchcam_maps(tv, blocks, x, [0, 2])
    assert m.key == "cam/legrad/" + "+".join(layers) and m.values.shape == (2, SIZE, SIZE)
    assert ref.max() > 0 and ref.std() > 0.05 * ref.max() and np.abs(ref[0] - ref[1]).max() > 0.05 * ref.max()
    np.testing.assert_allclose(m.values, ref, rtol=0, atol=1e-5 * ref.max())
    assert ad.net.model.config._attn_implementation == "sdpa"                  # restored after eager


def test_cli_all_includes_it_on_a_vit_and_randomize_redoes_it(cli, vit, tmp_path):
    from xaicli.explain import registry
    from xaicli.io.record import Record

    ad, _, image, folder = vit
    png = write_png(tmp_path / "img.png", image)
    r = cli(["cam", "-m", str(folder), "-M", "legrad", "-o", "-", str(png)])
    assert r.exit_code == 0, r.stderr
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        (rec,) = [Record.from_bytes(tar.extractfile(t).read(), t.name) for t in tar if t.name.endswith(".npz")]
    info = rec.map_info("cam/legrad/last")
    assert info["reference"] == "torchcam.methods.LeGrad" and info["module"] == "vit.layers.1.layernorm_before"
    s = cli(["stats", "-m", str(folder), "--randomize", "--rand-steps", "2", "--steps", "2", "-f", "csv"],
            input=r.stdout)
    assert s.exit_code == 0, s.stderr
    (row,) = list(csv.DictReader(io.StringIO(s.output)))
    assert row["method"] == "legrad" and row["rand_spearman_all"] != ""
    every = lambda tokens: [m.name for m in registry.resolve("cam", ["all"], "classification", 1, tokens)]  # noqa
    assert "legrad" in every(True) and "legrad" not in every(False)


def test_on_a_cnn_it_is_one_line(cli, tmp_path):
    from xaicli.models.builtin.shapes import make_sample

    png = write_png(tmp_path / "obj.png", make_sample(3, "classification")[0])
    line = error_line(cli(["cam", "-m", "builtin:shapes-cls", "-M", "legrad", str(png)]), 2)
    assert "legrad applies to ViT layers only" in line and "gradcam" in line


def test_library_call_on_a_cnn_names_the_layer():
    from helpers_models import tiny_classifier

    from xaicli.errors import XaiUsageError
    from xaicli.explain.cam import CamEngine
    from xaicli.explain.targets import Target
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.layers import layer_table
    from xaicli.models.preprocess import Preprocessing

    ad = ModelAdapter(LogitsModule(tiny_classifier()), "classification", ["a", "b", "c"],
                      Preprocessing(size=(24, 24)), torch.device("cpu"))
    engine = CamEngine(ad, layer_table(ad, (24, 24)).resolve(None), ["legrad"])
    with pytest.raises(XaiUsageError, match=r"--layer last \(conv\) is not one"):
        engine.explain(np.zeros((24, 24, 3), np.uint8), [Target("class", 0, "a")])
