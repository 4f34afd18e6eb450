"""``RunConfig``: every setting of ``steerlab run``, from defaults, a file and flags.

Precedence: defaults < config file (TOML or JSON) < command-line flags; with
``quick=True`` the :data:`QUICK` presets replace the defaults of the fields that neither
the file nor the flags set. Each field's help text lives in its metadata, and the CLI
builds one ``--flag`` per field from it.
"""

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from steerlab.errors import ConfigError, did_you_mean
from steerlab.utils.grids import strength_grid


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RunConfig:
    """Settings of the main job (``steerlab run``); see each field's ``help``."""

    model: str = _f(
        "embedded", "Model: 'embedded' (SmolLM2-135M-Instruct), an HF id or a local dir."
    )
    behavior: str = _f("power-seeking", "Behavior (steerlab.data.list_behaviors()).")
    layer: int = _f(14, "Steering layer (resid_post).")
    methods: tuple[str, ...] = _f(
        ("caa", "freeform", "pca", "bipo"), "Vector methods, comma-separated."
    )
    n_train: int = _f(48, "Training pairs (the first N of the train split).")
    n_test: int = _f(24, "Held-out pairs / A/B items for the judge-free metrics.")
    multipliers: tuple[float, ...] = _f(
        (-2.0, -1.0, 0.0, 1.0, 2.0), "Steering multipliers, comma-separated."
    )
    strengths: tuple[float, ...] = _f(
        (0.0, 0.05, 0.1, 0.2, 0.4),
        "Strengths |k v| / mean ||h|| of the matched comparison (effect at matched KL on "
        "neutral text, paired CIs), comma-separated.",
    )
    n_neutral: int = _f(
        16, "Neutral texts for the matched comparison's KL (0: skip the matched comparison)."
    )
    bipo_epochs: int = _f(3, "BiPO epochs (paper: 20; short runs use a higher lr).")
    bipo_lr: float = _f(2e-2, "BiPO learning rate (paper: 5e-4 over ~100x more steps).")
    bipo_warmup_steps: int = _f(4, "BiPO warm-up steps of the cosine schedule.")
    open_ended: int = _f(6, "Open-ended questions generated per condition (0: skip).")
    max_new_tokens: int = _f(40, "Tokens per open-ended answer (paper: 200).")
    judge_train: int = _f(160, "Train pairs the offline classifier judge is fitted on.")
    batch_size: int = _f(16, "Sequences per forward pass.")
    seed: int = _f(0, "Seed of data orders, BiPO and the judge split.")
    device: str | None = _f(None, "cpu / cuda (default: cuda when available).")
    out: str = _f(
        "runs/{behavior}-L{layer}", "Output directory ({behavior}, {layer} are filled in)."
    )
    quick: bool = _f(False, "Small settings for a 1-2 minute smoke run (tests, CI).")

    def __post_init__(self) -> None:
        if not isinstance(self.strengths, tuple):
            raise ConfigError("strengths must be a tuple, e.g. (0.0, 0.1, 0.2, 0.4).")
        strengths = strength_grid(self.strengths, "RunConfig.strengths")
        object.__setattr__(self, "strengths", strengths)
        if not isinstance(self.methods, tuple) or not isinstance(self.multipliers, tuple):
            raise ConfigError(
                "methods and multipliers must be tuples; RunConfig.build() also reads "
                "comma-separated strings such as '-2,-1,0,1,2'."
            )
        object.__setattr__(self, "multipliers", tuple(float(m) for m in self.multipliers))
        for name in ("layer", "n_train", "n_test", "bipo_epochs", "bipo_warmup_steps",
                     "open_ended", "max_new_tokens", "judge_train", "batch_size", "seed",
                     "n_neutral"):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"RunConfig.{name}={v!r} must be an int.")
        lows = {"n_train": 2, "n_test": 2, "bipo_epochs": 1, "max_new_tokens": 1,
                "judge_train": 4, "batch_size": 1, "layer": 0, "open_ended": 0,
                "bipo_warmup_steps": 0, "n_neutral": 0}  # fmt: skip
        for name, low in lows.items():
            if getattr(self, name) < low:
                raise ConfigError(f"RunConfig.{name}={getattr(self, name)} must be >= {low}.")
        if not (self.bipo_lr > 0 and math.isfinite(self.bipo_lr)):
            raise ConfigError(f"RunConfig.bipo_lr={self.bipo_lr!r} must be a positive number.")
        if not self.multipliers or not all(math.isfinite(m) for m in self.multipliers):
            raise ConfigError(f"multipliers={self.multipliers!r}: give finite numbers.")
        if not self.methods:
            raise ConfigError("methods is empty; use some of caa, freeform, pca, bipo.")
        from steerlab.vectors import METHODS

        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(
                    f"Unknown method {m!r} in methods.{did_you_mean(m, METHODS.names())} "
                    f"Valid methods: {', '.join(METHODS.names())}."
                )

    @property
    def out_dir(self) -> Path:
        """``out`` with ``{behavior}`` and ``{layer}`` filled in."""
        return Path(self.out.format(behavior=self.behavior, layer=self.layer))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def help(cls) -> dict[str, str]:
        """``{field: help text}``."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    @classmethod
    def build(
        cls, path: "str | Path | None" = None, overrides: Mapping[str, Any] | None = None
    ) -> "RunConfig":
        """Defaults < ``path`` (TOML/JSON) < ``overrides`` (``None`` values are ignored);
        ``quick`` fills the :data:`QUICK` presets into fields left at their defaults."""
        values: dict[str, Any] = {}
        if path is not None:
            values.update(read_config_file(path))
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        _check_keys(given, "overrides")
        values.update(given)
        if values.get("quick"):
            for k, v in QUICK.items():
                values.setdefault(k, v)
        return cls(**_coerce(values))


#: What ``--quick`` changes (unless the file or the flags set the field).
QUICK: dict[str, Any] = {
    "n_train": 6,
    "n_test": 4,
    "multipliers": (-1.0, 0.0, 1.0),
    "strengths": (0.0, 0.1, 0.4),
    "n_neutral": 3,
    "bipo_epochs": 1,
    "bipo_warmup_steps": 1,
    "open_ended": 2,
    "max_new_tokens": 8,
    "judge_train": 24,
    "out": "runs/quick-{behavior}-L{layer}",
}


def _split(text: str) -> list[str]:
    return [x.strip() for x in str(text).split(",") if x.strip()]


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    """Comma-separated strings and lists (flags, TOML, JSON) -> the fields' tuple types."""
    out = dict(values)
    if "methods" in out:
        m = out["methods"]
        out["methods"] = tuple(_split(m) if isinstance(m, str) else (str(x) for x in m))
    for key, example in (("multipliers", "-2,-1,0,1,2"), ("strengths", "0,0.1,0.2,0.4")):
        if key in out:
            m = out[key]
            try:
                out[key] = tuple(float(x) for x in (_split(m) if isinstance(m, str) else m))
            except (TypeError, ValueError):
                raise ConfigError(f"{key}={m!r}: give numbers, e.g. '{example}'.") from None
    for k in ("bipo_lr",):
        if isinstance(out.get(k), int) and not isinstance(out.get(k), bool):
            out[k] = float(out[k])
    return out


def _check_keys(values: Mapping[str, Any], where: str) -> None:
    valid = [f.name for f in fields(RunConfig)]
    for k in values:
        if k not in valid:
            raise ConfigError(
                f"Unknown setting {k!r} in {where}.{did_you_mean(k, valid)} "
                f"Valid settings: {', '.join(valid)}."
            )


def read_config_file(path: "str | Path") -> dict[str, Any]:
    """Settings from a ``.toml`` or ``.json`` file (a ``[run]`` table is also accepted)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            raise ConfigError(
                f"Config file {path.name!r} must end in .toml or .json (got {path.suffix!r})."
            )
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"Cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a table / object of settings.")
    if isinstance(data.get("run"), dict) and len(data) == 1:
        data = data["run"]
    _check_keys(data, str(path))
    return dict(data)


__all__ = ["QUICK", "RunConfig", "read_config_file"]
