"""The latent mapping model: the paper's architecture, the release's names and numbers."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import relative_error
from gmseg.mapping import LatentMappingModel, SpatialSelfAttention, count_parameters


def test_paper_configuration_has_1_565_m_parameters():
    assert count_parameters(LatentMappingModel()) == 1_564_976


def test_release_checkpoint_loads_strictly_and_reproduces_every_level(parity):
    state = torch.load(parity / "lmm_official.pth", map_location="cpu", weights_only=True)["model"]
    model = LatentMappingModel().eval()
    model.load_state_dict(state, strict=True)
    io = load_file(str(parity / "lmm_io.safetensors"))
    with torch.no_grad():
        outputs = model(io["input"])
    assert set(outputs) == {"level3", "level2", "level1", "out"}
    for name, value in outputs.items():
        assert relative_error(value, io[name]) < 1e-4, name


def test_sdpa_attention_equals_the_release_einsum_form():
    torch.manual_seed(0)
    attention = SpatialSelfAttention(32).eval()
    x = torch.randn(2, 32, 7, 5)
    with torch.no_grad():
        h = attention.norm(x)
        q, k, v = attention.q(h), attention.k(h), attention.v(h)
        b, c, hh, ww = q.shape
        weights = torch.einsum("bci,bcj->bij", q.reshape(b, c, -1), k.reshape(b, c, -1)) * c**-0.5
        weights = weights.softmax(dim=2)
        expected = x + attention.proj_out(
            torch.einsum("bcj,bij->bci", v.reshape(b, c, -1), weights).reshape(b, c, hh, ww)
        )
        assert torch.allclose(attention(x), expected, atol=1e-5)


def test_no_downsampling_and_level_selection():
    model = LatentMappingModel(ch=16, ch_mult=(1, 2, 2)).eval()
    x = torch.randn(1, 4, 12, 12)
    with torch.no_grad():
        all_levels = model(x)
        only_out = model(x, levels=["out"])
    assert model.level_names == ["level2", "level1", "out"]
    assert all(v.shape == (1, 4, 12, 12) for v in all_levels.values())
    assert list(only_out) == ["out"] and torch.allclose(only_out["out"], all_levels["out"])


def test_invalid_widths_are_rejected():
    with pytest.raises(ValueError, match="divisible by 16"):
        LatentMappingModel(ch=24)
