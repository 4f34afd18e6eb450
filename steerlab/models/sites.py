"""Typed hook sites: the one place that turns (layer, kind) into TransformerLens names."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from steerlab.errors import HookSiteError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from steerlab.models.model import SteerlabModel

#: kind -> TransformerLens hook name template. ``resid_post`` of layer L is the residual
#: stream after decoder block L (where BiPO adds its vector).
HOOK_KINDS: dict[str, str] = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
}


@dataclass(frozen=True, order=True)
class HookSite:
    """A place in the model where a steering vector is added or activations are read.

    ``layer`` may be negative (counted from the end, like Python indexing); call
    :meth:`resolve` with a model to get the canonical non-negative site.
    """

    layer: int
    kind: str = "resid_post"

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise HookSiteError(
                f"HookSite layer must be an int, got {self.layer!r} ({type(self.layer).__name__})."
            )
        if self.kind not in HOOK_KINDS:
            raise HookSiteError(
                f"Unknown hook kind {self.kind!r}.{did_you_mean(self.kind, HOOK_KINDS)} "
                f"Valid kinds: {', '.join(HOOK_KINDS)}."
            )

    def resolve(self, n_layers: int) -> "HookSite":
        """Return the site with a non-negative layer, checked against ``n_layers``."""
        layer = self.layer + n_layers if self.layer < 0 else self.layer
        if not 0 <= layer < n_layers:
            raise HookSiteError(
                f"Layer {self.layer} is out of range for a model with {n_layers} layers; "
                f"use 0..{n_layers - 1} (or -{n_layers}..-1 from the end)."
            )
        return HookSite(layer, self.kind)

    def hook_name(self, model: "SteerlabModel | None" = None) -> str:
        """The TransformerLens hook name; validated against ``model.hook_dict`` if given."""
        site = self.resolve(model.n_layers) if model is not None else self
        if site.layer < 0:
            raise HookSiteError(
                f"Layer {self.layer} is negative; resolve it against a model first "
                "(pass model= or call .resolve(n_layers))."
            )
        name = HOOK_KINDS[site.kind].format(layer=site.layer)
        if model is not None and name not in model.hook_names:
            parallel = bool(getattr(model.bridge.cfg, "parallel_attn_mlp", False))
            why = (
                " Its blocks run attention and MLP in parallel on resid_pre (GPT-NeoX / "
                "GPT-J style), so there is no residual between them; use resid_pre, "
                "attn_out, mlp_out or resid_post."
                if site.kind == "resid_mid" and parallel
                else did_you_mean(name, model.hook_names)
            )
            raise HookSiteError(f"Hook point {name!r} does not exist on {model.model_id}.{why}")
        return name

    @property
    def key(self) -> str:
        """Stable string key used in files: ``'14.resid_post'``."""
        return f"{self.layer}.{self.kind}"

    @classmethod
    def parse(cls, text: "str | int | HookSite") -> "HookSite":
        """Parse ``'14'``, ``'14.resid_post'``, ``'resid_post@14'`` or an int into a site."""
        if isinstance(text, HookSite):
            return text
        if isinstance(text, int) and not isinstance(text, bool):
            return cls(text)
        raw = str(text).strip()
        layer_txt, kind = raw, "resid_post"
        if "@" in raw:
            kind, layer_txt = raw.split("@", 1)
        elif "." in raw:
            layer_txt, kind = raw.split(".", 1)
        elif ":" in raw:
            layer_txt, kind = raw.split(":", 1)
        try:
            layer = int(layer_txt)
        except ValueError:
            raise HookSiteError(
                f"Cannot read a hook site from {text!r}; write LAYER or LAYER.KIND, "
                f"e.g. '14' or '14.resid_post' (kinds: {', '.join(HOOK_KINDS)})."
            ) from None
        return cls(layer, kind)

    def __str__(self) -> str:
        return self.key
