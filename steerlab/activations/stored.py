"""``ContrastiveActivations``: frozen matching / not-matching activations per site."""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch
from jaxtyping import Float
from torch import Tensor

from steerlab.errors import ConfigError, VectorFileError
from steerlab.models.sites import HookSite
from steerlab.utils.files import atomic_write_bytes


@dataclass(frozen=True, eq=False)
class ContrastiveActivations:
    """Per site, ``[n, d_model]`` activations of the matching and not-matching sides.

    Row ``i`` of both tensors comes from the same pair / item.
    """

    matching: Mapping[HookSite, Float[Tensor, "n d_model"]]
    not_matching: Mapping[HookSite, Float[Tensor, "n d_model"]]
    position: str
    model_id: str = "unknown"
    dataset_hash: str = ""
    kind: str = "pairs"
    meta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.matching) != set(self.not_matching):
            raise ConfigError("matching and not_matching must cover the same sites.")
        for s in self.matching:
            if self.matching[s].shape != self.not_matching[s].shape:
                raise ConfigError(
                    f"At {s}: matching {tuple(self.matching[s].shape)} vs not_matching "
                    f"{tuple(self.not_matching[s].shape)}; rows must pair up."
                )
        object.__setattr__(self, "matching", MappingProxyType(dict(self.matching)))
        object.__setattr__(self, "not_matching", MappingProxyType(dict(self.not_matching)))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    @property
    def sites(self) -> tuple[HookSite, ...]:
        return tuple(sorted(self.matching))

    @property
    def n(self) -> int:
        return int(next(iter(self.matching.values())).shape[0])

    def differences(self, site: HookSite) -> Float[Tensor, "n d_model"]:
        """matching - not_matching, row by row."""
        return self.matching[site] - self.not_matching[site]

    def save(self, path: "str | Path") -> Path:
        from safetensors.torch import save

        path = Path(path)
        tensors = {}
        for s in self.sites:
            tensors[f"matching/{s.key}"] = self.matching[s].contiguous().cpu()
            tensors[f"not_matching/{s.key}"] = self.not_matching[s].contiguous().cpu()
        meta = {
            "position": self.position,
            "model_id": self.model_id,
            "dataset_hash": self.dataset_hash,
            "kind": self.kind,
            "meta": json.dumps(dict(self.meta)),
        }
        atomic_write_bytes(path, save(tensors, metadata=meta))
        return path

    @classmethod
    def load(cls, path: "str | Path") -> "ContrastiveActivations":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except Exception as exc:
            raise VectorFileError(
                f"{str(path)!r} is not a readable activations file: {exc}"
            ) from exc
        pos: dict[HookSite, torch.Tensor] = {}
        neg: dict[HookSite, torch.Tensor] = {}
        for k, t in tensors.items():
            side, key = k.split("/", 1)
            (pos if side == "matching" else neg)[HookSite.parse(key)] = t
        return cls(
            pos,
            neg,
            meta.get("position", "unknown"),
            meta.get("model_id", "unknown"),
            meta.get("dataset_hash", ""),
            meta.get("kind", "pairs"),
            json.loads(meta.get("meta", "{}")),
        )
