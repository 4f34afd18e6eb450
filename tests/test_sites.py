"""Hook sites: (layer, kind) values, validation against the model, TransformerLens names."""

import pytest
import torch

from steerlab.errors import HookSiteError
from steerlab.models.sites import HOOK_KINDS, HookSite

# --- values (no model) -------------------------------------------------------------------


def test_default_kind_is_resid_post_and_key_format():
    site = HookSite(14)
    assert site.kind == "resid_post"
    assert site.key == "14.resid_post" == str(site)


@pytest.mark.parametrize("kind", sorted(HOOK_KINDS))
def test_hook_name_of_every_kind(kind):
    assert HookSite(3, kind).hook_name() == HOOK_KINDS[kind].format(layer=3)
    assert HookSite(3, kind).hook_name().startswith("blocks.3.hook_")


def test_sites_are_hashable_ordered_and_frozen():
    a, b, c = HookSite(1), HookSite(1, "resid_pre"), HookSite(0, "resid_post")
    assert sorted([a, b, c])[0] == c  # by layer first
    assert sorted([HookSite(10), HookSite(9)]) == [HookSite(9), HookSite(10)]  # numerically
    assert len({a, HookSite(1, "resid_post")}) == 1
    with pytest.raises(AttributeError):
        a.layer = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("layer", "n_layers", "expected"), [(0, 4, 0), (3, 4, 3), (-1, 4, 3), (-4, 4, 0)]
)
def test_resolve_negative_layers_like_python(layer, n_layers, expected):
    assert HookSite(layer, "mlp_out").resolve(n_layers) == HookSite(expected, "mlp_out")


@pytest.mark.parametrize("layer", [4, 5, -5])
def test_resolve_out_of_range(layer):
    with pytest.raises(
        HookSiteError, match=rf"Layer {layer} is out of range .* 4 layers; use 0\.\.3"
    ):
        HookSite(layer).resolve(4)


def test_negative_layer_without_model_has_no_name():
    with pytest.raises(HookSiteError, match="resolve it against a model"):
        HookSite(-1).hook_name()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("14", HookSite(14)),
        (" 7 ", HookSite(7)),
        (14, HookSite(14)),
        ("14.resid_pre", HookSite(14, "resid_pre")),
        ("mlp_out@3", HookSite(3, "mlp_out")),
        ("2:attn_out", HookSite(2, "attn_out")),
        ("-1.resid_post", HookSite(-1)),
    ],
)
def test_parse(text, expected):
    assert HookSite.parse(text) == expected


def test_parse_round_trips_key():
    for kind in HOOK_KINDS:
        site = HookSite(11, kind)
        assert HookSite.parse(site.key) == site
    assert HookSite.parse(HookSite(2)) == HookSite(2)


@pytest.mark.parametrize("text", ["fourteen", "x.resid_post", ""])
def test_parse_rejects_garbage(text):
    with pytest.raises(HookSiteError, match="Cannot read a hook site"):
        HookSite.parse(text)


def test_parse_unknown_kind_suggests():
    with pytest.raises(HookSiteError, match="Did you mean 'mlp_out'"):
        HookSite.parse("3.mlp_ot")


# --- against a model ---------------------------------------------------------------------


def test_model_site_resolves_and_exists(tiny_model):
    assert tiny_model.n_layers == 2 and tiny_model.d_model == 64
    site = tiny_model.site(-1, "resid_mid")
    assert site == HookSite(1, "resid_mid")
    for kind in HOOK_KINDS:
        name = tiny_model.site(0, kind).hook_name(tiny_model)
        assert name in tiny_model.bridge.hook_dict
    assert tiny_model.sites([0, -1]) == (HookSite(0), HookSite(1))


def test_model_site_out_of_range(tiny_model):
    with pytest.raises(HookSiteError, match="out of range for a model with 2 layers"):
        tiny_model.site(2)


@pytest.mark.parametrize("kind", sorted(HOOK_KINDS))
def test_capture_every_kind_shape(tiny_model, kind):
    from steerlab.activations.capture import capture

    ids = torch.tensor([tiny_model.chat.encode("Where is Paris?").prompt_ids])
    sites = [HookSite(0, kind), HookSite(-1, kind)]
    with torch.no_grad(), capture(tiny_model, sites) as store:
        tiny_model.bridge(ids)
    assert set(store) == {HookSite(0, kind), HookSite(1, kind)}  # resolved keys
    for t in store.values():
        assert t.shape == (1, ids.shape[1], 64)


def test_resid_pre_of_next_layer_equals_resid_post(tiny_model_4l):
    """The names point at the intended places: resid_post(L) is resid_pre(L+1)."""
    from steerlab.activations.capture import capture

    m = tiny_model_4l
    ids = torch.tensor([m.chat.encode("A short question?").prompt_ids])
    sites = [HookSite(1, "resid_post"), HookSite(2, "resid_pre"), HookSite(1, "resid_pre")]
    with torch.no_grad(), capture(m, sites) as store:
        m.bridge(ids)
    torch.testing.assert_close(store[HookSite(1)], store[HookSite(2, "resid_pre")])
    assert not torch.allclose(store[HookSite(1)], store[HookSite(1, "resid_pre")])
