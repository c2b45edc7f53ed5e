"""Baselines: each kind is the image it claims to be (closed forms, scipy's Gaussian filter),
random ones are reproducible, files are read and checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaicli.errors import XaiUsageError
from xaicli.explain.baselines import (KINDS, Baseline, derive_seed, gaussian_blur, make_baselines,
                                      parse_baseline, parse_baselines)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def unit_image(h=12, w=10, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random((1, 3, h, w)).astype(np.float32))


def make(kind, x, **kw):
    return make_baselines(parse_baseline(kind), x, mean=MEAN, **kw)


def test_constant_kinds():
    x = unit_image()
    assert torch.equal(make("black", x), torch.zeros_like(x))
    assert torch.equal(make("white", x), torch.ones_like(x))
    mean = make("mean", x)
    torch.testing.assert_close(mean[0, :, 3, 4], x.mean(dim=(-2, -1))[0])
    assert float(mean.std(dim=(-2, -1)).max()) < 1e-7


def test_zero_is_zero_after_normalisation():
    """`zero` is the model input 0: the unit image equal to the mean, which (u - mean) / std maps to 0."""
    from xaicli.models.adapter import LogitsModule, ModelAdapter
    from xaicli.models.preprocess import Preprocessing

    prep = Preprocessing(channels=3, size=(8, 6), mean=MEAN, std=STD)
    ad = ModelAdapter(LogitsModule(torch.nn.Identity()), "classification", ["a"], prep, torch.device("cpu"))
    x = unit_image(16, 12)
    assert float(ad.normalize(make("zero", x)).abs().max()) < 1e-6
    assert float(ad.normalize(make("black", x)).abs().max()) > 1       # black is not zero after normalising


def test_blur_matches_scipy_gaussian_filter():
    from scipy.ndimage import gaussian_filter

    x = unit_image(20, 17)
    for sigma in (0.8, 2.5, 9.0):                                      # 9: kernel wider than the image
        ours = gaussian_blur(x, sigma)[0].numpy()
        ref = np.stack([gaussian_filter(x[0, c].double().numpy(), sigma, mode="nearest", truncate=3.0)
                        for c in range(3)])
        np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert torch.equal(make("blur", x, blur_sigma=0.0), x)


def test_blur_wider_than_the_image_matches_scipy_at_bounded_cost(monkeypatch):
    """Taps beyond the image read only its edge pixel; folding them into the outer tap is exact
    (scipy), also when the tail is summed in closed form, and the work no longer grows with sigma."""
    from scipy.ndimage import gaussian_filter

    from xaicli.explain import baselines

    x = unit_image(6, 5).double()

    def ref(sigma):
        return np.stack([gaussian_filter(x[0, c].numpy(), sigma, mode="nearest", truncate=3.0) for c in range(3)])

    np.testing.assert_allclose(gaussian_blur(x, 40.0)[0].numpy(), ref(40.0), rtol=0, atol=1e-12)
    monkeypatch.setattr(baselines, "EXACT_TAPS", 8)                   # the closed-form tail, checked by scipy
    for sigma in (2e3, 3e4):
        np.testing.assert_allclose(gaussian_blur(x, sigma)[0].numpy(), ref(sigma), rtol=0, atol=1e-12)
    monkeypatch.undo()
    # sigma -> inf: each 1-D pass tends to the mean of the two edge pixels, so the image to the mean
    # of its four corners (the old kernel, 6e300 taps long, overflowed)
    corners = x[0][:, [0, 0, -1, -1], [0, -1, 0, -1]].mean(-1)
    for sigma in (1e12, 1e300, 1.7e308):
        out = gaussian_blur(x.float(), sigma)[0]
        torch.testing.assert_close(out, corners.float()[:, None, None].expand(3, 6, 5), atol=1e-6, rtol=0)
    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(ValueError, match="finite"):
            gaussian_blur(x, bad)


def test_blur_default_sigma_scales_with_the_image():
    small, big = unit_image(32, 32), unit_image(256, 256)
    from scipy.ndimage import gaussian_filter

    ref = gaussian_filter(big[0, 0].double().numpy(), 16.0, mode="nearest", truncate=3.0)
    np.testing.assert_allclose(make("blur", big)[0, 0].numpy(), ref, atol=1e-5)
    ref = gaussian_filter(small[0, 0].double().numpy(), 2.0, mode="nearest", truncate=3.0)
    np.testing.assert_allclose(make("blur", small)[0, 0].numpy(), ref, atol=1e-5)


def test_random_kinds_are_seeded_and_reproducible():
    x = unit_image()
    for kind in ("noise", "uniform"):
        a = make(kind, x, samples=3, seed=5, key="img1")
        b = make(kind, x, samples=3, seed=5, key="img1")
        assert a.shape == (3, 3, 12, 10)
        assert torch.equal(a, b)
        assert not torch.equal(a, make(kind, x, samples=3, seed=6, key="img1"))
        assert not torch.equal(a, make(kind, x, samples=3, seed=5, key="img2"))
        assert not torch.equal(a[0], a[1])                              # K different draws
        assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert derive_seed(0, "a", "noise") == derive_seed(0, "a", "noise") != derive_seed(0, "b", "noise")


def test_noise_statistics_follow_noise_std():
    x = torch.full((1, 3, 200, 200), 0.5)
    x[..., 0, 0] = 0.0
    x[..., 0, 1] = 1.0                                                 # value range 1
    n = make("noise", x, samples=1, noise_std=0.1) - x
    assert abs(float(n.mean())) < 0.005 and abs(float(n.std()) - 0.1) < 0.005
    u = make("uniform", x, samples=2)
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005


def test_parse_names_and_errors(tmp_path):
    for k in KINDS:
        b = parse_baseline(k.upper())
        assert b.kind == k and b.name == k
    with pytest.raises(XaiUsageError, match="unknown baseline"):
        parse_baseline("grey")
    with pytest.raises(XaiUsageError, match="no such file"):
        parse_baseline(str(tmp_path / "missing.png"))
    with pytest.raises(XaiUsageError, match="folder"):
        parse_baseline(str(tmp_path))
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(XaiUsageError, match="npy"):
        parse_baseline(str(tmp_path / "bad.npy"))


def _to_unit(img):
    x = torch.from_numpy(np.ascontiguousarray(img)).float() / (65535.0 if img.dtype == np.uint16 else 255.0)
    return x[None, None].expand(-1, 3, -1, -1) if x.ndim == 2 else x.permute(2, 0, 1)[None]


def test_file_baselines(tmp_path):
    import imageio.v3 as iio

    x = unit_image(6, 5)
    rgb = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "ref.png", rgb)
    b = parse_baseline(str(tmp_path / "ref.png"))
    assert b.kind == "file" and b.name == "file-ref"
    out = make_baselines(b, x, mean=MEAN, to_unit=_to_unit)
    torch.testing.assert_close(out, torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)

    floats = np.random.default_rng(2).random((3, 6, 5)).astype(np.float32)       # CxHxW unit values
    np.save(tmp_path / "f.npy", floats)
    torch.testing.assert_close(make_baselines(parse_baseline(str(tmp_path / "f.npy")), x, mean=MEAN),
                               torch.from_numpy(floats)[None])
    np.save(tmp_path / "hw.npy", floats[0])                                     # HxW: every channel
    out = make_baselines(parse_baseline(str(tmp_path / "hw.npy")), x, mean=MEAN)
    torch.testing.assert_close(out[0, 2], torch.from_numpy(floats[0]))
    np.save(tmp_path / "u16.npy", np.full((6, 5), 65535, np.uint16))            # integers are pixel values
    out = make_baselines(parse_baseline(str(tmp_path / "u16.npy")), x, mean=MEAN, to_unit=_to_unit)
    assert torch.equal(out, torch.ones_like(x))

    np.save(tmp_path / "small.npy", floats[:, :4])
    with pytest.raises(XaiUsageError, match="differs from the image"):
        make_baselines(parse_baseline(str(tmp_path / "small.npy")), x, mean=MEAN)


def test_colliding_file_names_get_distinct_keys(tmp_path, monkeypatch):
    """One stem in two folders, or stems that differ only in characters made `_`, are two maps:
    `-<8 hex of sha1(absolute path)>` is appended, as to record ids; a file alone keeps its key."""
    import hashlib
    import os

    monkeypatch.chdir(tmp_path)
    for d in ("ba", "bb"):
        (tmp_path / d).mkdir()
    for name in ("ba/x.npy", "bb/x.npy", "bb/x y.npy", "bb/x_y.npy", "bb/solo.npy"):
        np.save(name, np.zeros((4, 4), np.float32))

    def h(p):
        return hashlib.sha1(os.path.join(os.getcwd(), p).encode()).hexdigest()[:8]     # the absolute path

    got = parse_baselines(["ba/x.npy", "black", "bb/x.npy", "./ba/x.npy", "BLACK", "bb/x y.npy", "bb/x_y.npy",
                           "bb/solo.npy"])
    assert [b.name for b in got] == [f"file-x-{h('ba/x.npy')}", "black", f"file-x-{h('bb/x.npy')}",
                                     f"file-x_y-{h('bb/x y.npy')}", f"file-x_y-{h('bb/x_y.npy')}", "file-solo"]
    assert len({b.name for b in got}) == len(got)
    assert [b.name for b in parse_baselines(["ba/x.npy", "white"])] == ["file-x", "white"]
    # a file named like another's hashed key cannot be told apart: refused, naming both files
    np.save(f"x-{h('ba/x.npy')}.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(XaiUsageError, match=f"x-{h('ba/x.npy')}.npy.*would both be stored"):
        parse_baselines(["ba/x.npy", "bb/x.npy", f"x-{h('ba/x.npy')}.npy"])


@pytest.mark.parametrize("dtype,value", [(np.int64, 255), (np.int64, -1), (np.int8, 1), (np.int16, 1000),
                                         (np.int32, 7), (np.uint32, 255), (np.uint64, 1)])
def test_npy_integers_other_than_uint8_and_uint16_are_refused(tmp_path, dtype, value):
    """Their pixel scale is a guess: int64 255 was read as 16-bit (almost black), -1 wrapped to white."""
    path = tmp_path / "b.npy"
    np.save(path, np.full((6, 5, 3), value, dtype))
    with pytest.raises(XaiUsageError, match=r"b\.npy: .*integers.*uint8 \(0-255\), uint16 \(0-65535\) or floats"):
        parse_baseline(str(path))


def test_npy_pixel_integers_keep_their_scale(tmp_path):
    x = unit_image(6, 5)
    for dtype, top in ((np.uint8, 255), (">u2", 65535), (np.uint16, 65535)):     # a big-endian file too
        arr = np.full((6, 5, 3), top, dtype)
        arr[0, 0] = 0
        np.save(tmp_path / "p.npy", arr)
        out = make_baselines(parse_baseline(str(tmp_path / "p.npy")), x, mean=MEAN, to_unit=_to_unit)
        expect = torch.ones_like(x)
        expect[..., 0, 0] = 0
        assert torch.equal(out, expect), dtype


@pytest.mark.parametrize("values,words", [
    ([np.nan], ["1 of 30 values are NaN or infinite"]),
    ([np.inf, -np.inf], ["2 of 30 values are NaN or infinite"]),
    ([2.0], ["span [0, 2]", "outside [0, 1]"]),
    ([-0.5, 255.0], ["span [-0.5, 255]", "divide 8-bit values by 255"]),
    ([1 + 1e-5], ["span [0, 1.00001]"]),
])
def test_npy_floats_must_be_finite_and_in_unit_range(tmp_path, values, words):
    arr = np.zeros((6, 5), np.float64)
    arr.flat[:len(values)] = values
    np.save(tmp_path / "f.npy", arr)
    with pytest.raises(XaiUsageError) as err:
        parse_baseline(str(tmp_path / "f.npy"))
    assert str(tmp_path / "f.npy") in str(err.value)
    for w in words:
        assert w in str(err.value), str(err.value)


def test_npy_floats_may_stray_by_rounding(tmp_path):
    """1e-6 outside [0, 1] is rounding (e.g. of x / 255 * 255 / 255), accepted and used as given."""
    arr = np.full((6, 5), 0.5, np.float32)
    arr[0, 0], arr[0, 1] = -5e-7, 1 + 5e-7
    np.save(tmp_path / "f.npy", arr)
    out = make_baselines(parse_baseline(str(tmp_path / "f.npy")), unit_image(6, 5), mean=MEAN)
    assert torch.equal(out[0, 1], torch.from_numpy(arr))


def test_baseline_meta():
    assert Baseline("blur", "blur").to_meta() == {"baseline": "blur"}
    assert parse_baseline("noise").random and not parse_baseline("mean").random
