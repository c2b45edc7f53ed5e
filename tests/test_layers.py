"""Layer aliases resolve, by probing, to modules the forward pass really calls.

Checked against what the model itself does, not against our own table: an encoder
alias must output exactly the feature the smp encoder returns for that stage, and
`decoder_last` exactly what the segmentation head reads.
"""

from __future__ import annotations

import pytest
import torch

from xaicli.errors import XaiUsageError

HW = (64, 64)


pytestmark = pytest.mark.usefixtures("one_thread")


def adapter_for(model, task="segmentation", channels=3):
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.preprocess import Preprocessing

    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return ModelAdapter(LogitsModule(model), task, ["a", "b"], Preprocessing(channels=channels, size=HW),
                        torch.device("cpu"))


def smp_model(arch: str, encoder: str):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, classes=2)


def watch(model, paths):
    """Run one forward; per path: call count and (last) output; plus encoder features and head input."""
    mods = dict(model.named_modules())
    paths = sorted(set(paths))
    seen = {p: [] for p in paths}
    handles = [mods[p].register_forward_hook(lambda m, a, o, p=p: seen[p].append((o, o.detach().clone())))
               for p in paths]
    got = {}
    if hasattr(model, "encoder"):
        handles.append(model.encoder.register_forward_hook(lambda m, a, o: got.__setitem__("features", o)))
        handles.append(model.segmentation_head.register_forward_pre_hook(
            lambda m, a: got.__setitem__("head_in", a[0])))
    with torch.no_grad():
        model(torch.randn(1, 3, *HW))
    for h in handles:
        h.remove()
    return seen, got


@pytest.mark.parametrize("arch", ["UnetPlusPlus", "Unet", "FPN"])
@pytest.mark.parametrize("encoder", ["efficientnet-b0", "resnet18", "tu-resnet10t"])
def test_smp_aliases_are_called_and_are_the_features(arch, encoder):
    from xaicli.models.layers import SMP_ALIASES, layer_table

    model = smp_model(arch, encoder)
    table = layer_table(adapter_for(model), HW)
    assert set(SMP_ALIASES) <= set(table.aliases), table.aliases
    assert table.default == "decoder_last"
    layers = {name: table.one(name) for name in table.aliases}
    seen, got = watch(model, [la.path for la in layers.values()])
    for name, la in layers.items():
        assert len(seen[la.path]) == 1, f"{name} -> {la.path} called {len(seen[la.path])} times"
    feats = got["features"]
    depth = len(feats) - 1

    def is_feature(path, feature):
        """The very tensor the model passes on, and with those values when the module returned it."""
        obj, value = seen[path][0]
        return obj is feature and torch.equal(value, feature)

    for i in range(1, depth + 1):
        assert is_feature(layers[f"encoder_{i}"].path, feats[i]), f"encoder_{i} is not the stage-{i} feature"
    assert is_feature(layers["encoder_last"].path, feats[-1])
    assert is_feature(layers["decoder_last"].path, got["head_in"])
    head = seen[layers["seg_head"].path][0][1]
    assert isinstance(model.segmentation_head[0], torch.nn.Conv2d) and layers["seg_head"].path == "segmentation_head.0"
    assert head.shape[1] == 2
    if encoder.startswith("efficientnet"):
        # the trap: _conv_head exists but the forward never calls it; the last stage is a block
        # untrained residual blocks return their input's values: identity, not equality, decides
        assert layers["encoder_last"].path == f"encoder._blocks.{len(model.encoder._blocks) - 1}"
        assert "_conv_head" not in " ".join(la.path for la in layers.values())
        with pytest.raises(XaiUsageError, match="never calls"):
            table.one("encoder._conv_head")


def test_unetplusplus_script_spellings_resolve():
    from xaicli.models.layers import layer_table

    model = smp_model("UnetPlusPlus", "efficientnet-b0")
    table = layer_table(adapter_for(model), HW)
    assert table.one('decoder.blocks["x_0_4"]').path == "decoder.blocks.x_0_4"
    assert table.one("decoder.blocks['x_0_4']").path == table.aliases["decoder_last"]
    last = table.one("encoder._blocks[-1]")
    assert last.path == f"encoder._blocks.{len(model.encoder._blocks) - 1}"
    assert last.path == table.aliases["encoder_last"]
    assert table.one("model.segmentation_head[0]").path == "segmentation_head.0"


def test_unknown_layer_lists_the_valid_names():
    from xaicli.models.layers import layer_table

    table = layer_table(adapter_for(smp_model("Unet", "resnet18")), HW)
    with pytest.raises(XaiUsageError) as err:
        table.one("encoder_deepest")
    msg = str(err.value)
    assert "\n" not in msg and "encoder_deepest" in msg
    for alias in ("encoder_early", "encoder_mid", "encoder_last", "decoder_last", "seg_head"):
        assert alias in msg
    with pytest.raises(XaiUsageError, match="runs 2 times|never calls|not a feature map"):
        table.one("encoder.layer1.0.relu")     # torchvision's BasicBlock calls its relu twice


def hf_adapter(model):
    return adapter_for(model, "classification")


def test_convnext_stages_and_default():
    from transformers import ConvNextConfig, ConvNextForImageClassification

    from xaicli.models.layers import layer_table

    torch.manual_seed(0)
    model = ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16, 24], depths=[1, 1, 1], num_stages=3,
                                                          num_labels=2))
    table = layer_table(hf_adapter(model), HW)
    assert table.default == "last"
    assert table.aliases["last"] == "convnext.encoder.stages.2"
    assert [table.aliases[f"stage{i}"] for i in range(3)] == [f"convnext.encoder.stages.{i}" for i in range(3)]
    layer = table.one("last")
    assert layer.tokens is None and layer.shape == (1, 24, 4, 4)


def test_vit_last_is_layernorm_before_with_patch_grid():
    from transformers import ViTConfig, ViTForImageClassification

    from xaicli.models.layers import layer_table

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=32, image_size=32, patch_size=8, num_labels=2))
    ad = hf_adapter(model)
    table = layer_table(ad, (32, 32))
    last = table.one("last")
    assert last.path.endswith("layers.1.layernorm_before") or last.path.endswith("layer.1.layernorm_before")
    assert table.one("block0").path.endswith("0.layernorm_before")
    reshape = last.reshape_transform((32, 32))
    tokens = torch.arange(1 * 17 * 32, dtype=torch.float32).reshape(1, 17, 32)
    grid = reshape(tokens)
    assert grid.shape == (1, 32, 4, 4)
    # the CLS token is dropped; patch (row 1, col 2) is token 1 + 1*4 + 2
    assert torch.equal(grid[0, :, 1, 2], tokens[0, 1 + 4 + 2])


def test_swin_stages_are_token_grids():
    from transformers import SwinConfig, SwinForImageClassification

    from xaicli.models.layers import layer_table

    torch.manual_seed(0)
    model = SwinForImageClassification(SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1],
                                                  num_heads=[1, 2], window_size=4, num_labels=2))
    table = layer_table(hf_adapter(model), HW)
    last = table.one("last")
    assert last.path.endswith("layers.1.blocks.0.layernorm_before")
    reshape = last.reshape_transform(HW)
    assert reshape(torch.zeros(1, 64, 16)).shape == (1, 16, 8, 8)
    assert table.one("stage0").reshape_transform(HW)(torch.zeros(1, 256, 8)).shape == (1, 8, 16, 16)
