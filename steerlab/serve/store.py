"""The server's named steering vectors: loaded at start, listed, added and removed while running.

Every vector is checked against the model before it is used (hidden size, hook sites the
model has, finite values, a size cap); a bad one is refused with a 4xx error that names
the problem and the fix. Requests resolve names when they arrive, so removing a vector
never disturbs a request that is already generating with it.
"""

import base64
import binascii
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import ConfigError, SteerlabError, VectorFileError
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.serve.config import ServeConfig
from steerlab.serve.schema import RequestError
from steerlab.serve.strengths import SiteNorms, strength_at_x1
from steerlab.vectors.vector import Provenance, SteeringVector

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def load_vector_dir(path: "str | Path") -> dict[str, SteeringVector]:
    """Every ``*.safetensors`` vector of a directory, keyed by file stem (sorted)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise VectorFileError(
            f"--vectors {str(path)!r} is not a directory; pass a directory of .safetensors "
            "vectors (saved with SteeringVector.save)."
        )
    files = sorted(path.glob("*.safetensors"))
    if not files:
        pt = sorted(p.name for p in path.glob("*.pt"))
        if pt:
            shown = ", ".join(pt[:3]) + (", ..." if len(pt) > 3 else "")
            raise VectorFileError(
                f"--vectors {str(path)!r} holds {len(pt)} .pt file(s) ({shown}) and no "
                ".safetensors vectors; the server loads only .safetensors. Convert each "
                "BiPO .pt first: SteeringVector.from_bipo_pt(PATH, layer=L, model=model)"
                ".save(DIR / NAME) in Python, then pass that directory."
            )
    return {p.stem: SteeringVector.load(p) for p in files}


def check_fits(
    model: SteerlabModel, vec: SteeringVector, name: str, force_other_model: bool = False
) -> None:
    """Raise ``ConfigError`` unless ``vec`` can steer ``model`` (size, sites, and, unless
    ``force_other_model``, the model its provenance names)."""
    if not isinstance(vec, SteeringVector):
        raise ConfigError(f"Vector {name!r} is a {type(vec).__name__}, not a SteeringVector.")
    try:
        other = "allow" if force_other_model else "error"
        vec.check_model(model.d_model, model.n_layers, model.model_id, other)
        for site in vec.sites:
            site.hook_name(model)
    except SteerlabError as exc:
        raise ConfigError(f"Vector {name!r} does not fit the model: {exc}") from exc


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RequestError(
            f"Vector name {name!r} is not valid; use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit.",
            param="name",
        )


def _recommended(vec: SteeringVector) -> float | None:
    """The strength a calibration stored in ``vec``, or None."""
    from steerlab.steering.strength import recommended_strength

    try:
        return recommended_strength(vec).strength
    except SteerlabError:
        return None


class VectorStore:
    """Named vectors of one model (thread-safe)."""

    def __init__(
        self,
        model: SteerlabModel,
        vectors: Mapping[str, SteeringVector],
        config: ServeConfig,
        vector_dir: "str | Path | None" = None,
    ) -> None:
        self.model = model
        self.config = config
        root = config.vector_dir or vector_dir
        self.vector_dir = Path(root).expanduser().resolve() if root else None
        self._lock = threading.RLock()
        self._vectors: dict[str, SteeringVector] = {}
        self._sources: dict[str, str] = {}
        #: typical norms per resid_post site (the server measures them before serving)
        self.site_norms = SiteNorms(None, "not measured")
        for name, vec in vectors.items():
            check_fits(model, vec, name, config.force_other_model)
            self._vectors[name] = vec
            self._sources[name] = "start"

    # --- reading -----------------------------------------------------------------------
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._vectors)

    def get_many(self, names: "list[str]") -> list[SteeringVector]:
        """The named vectors; an unknown name (e.g. just removed) is a 400."""
        with self._lock:
            missing = [n for n in names if n not in self._vectors]
            if missing:
                raise RequestError(
                    f"Unknown steering vector {missing[0]!r}. Valid vectors: "
                    f"{', '.join(sorted(self._vectors)) or '(none)'}.",
                    param="steering",
                    code="unknown_vector",
                )
            return [self._vectors[n] for n in names]

    def describe(self, name: str) -> dict[str, Any]:
        vec, source = self._vectors[name], self._sources[name]
        return {
            "name": name,
            "object": "steering_vector",
            "sites": [str(s) for s in vec.sites],
            "d_model": vec.d_model,
            "method": vec.method,
            "behavior": vec.behavior,
            "norms": {str(s): round(n, 6) for s, n in vec.norms().items()},
            "strength_at_x1": strength_at_x1(vec, self.site_norms, self.model.n_layers),
            "recommended_strength": _recommended(vec),
            "source": source,
        }

    def list_body(self) -> dict[str, Any]:
        with self._lock:
            return {"object": "list", "data": [self.describe(n) for n in sorted(self._vectors)]}

    # --- changing ------------------------------------------------------------------------
    def add(self, name: Any, vec: SteeringVector, source: str) -> dict[str, Any]:
        _check_name(name)
        try:
            check_fits(self.model, vec, name, self.config.force_other_model)
        except ConfigError as exc:
            raise RequestError(str(exc), param="data", code="vector_does_not_fit") from None
        n_bytes = 4 * sum(t.numel() for t in vec.directions.values())
        if n_bytes > self.config.max_vector_bytes:
            raise RequestError(
                f"Vector {name!r} has {n_bytes} bytes of float32 data; this server accepts at "
                f"most {self.config.max_vector_bytes} (--max-vector-bytes). Use fewer sites.",
                status=413,
                param="data",
            )
        with self._lock:
            if name in self._vectors:
                raise RequestError(
                    f"A vector named {name!r} already exists; remove it first "
                    f"(DELETE /v1/steering/vectors/{name}) or pick another name.",
                    status=409,
                    param="name",
                    code="vector_exists",
                )
            if len(self._vectors) >= self.config.max_vectors:
                raise RequestError(
                    f"The server holds {len(self._vectors)} vectors, its limit "
                    f"(--max-vectors); remove one first.",
                    status=409,
                    code="too_many_vectors",
                )
            self._vectors[name] = vec
            self._sources[name] = source
            return self.describe(name)

    def missing(self, name: str) -> RequestError:
        """The 404 error for a name the store does not hold."""
        return RequestError(
            f"No vector named {name!r}. Valid vectors: {', '.join(self.names()) or '(none)'}.",
            status=404,
            type="not_found_error",
            param="name",
        )

    def remove(self, name: str) -> dict[str, Any]:
        with self._lock:
            if name not in self._vectors:
                raise self.missing(name)
            del self._vectors[name]
            del self._sources[name]
        return {"id": name, "object": "steering_vector.deleted", "deleted": True}

    def add_from_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """``{"name", "path"}`` (a file under the vector directory) or ``{"name", "data",
        "site" | "sites", "behavior"?}`` (base64 little-endian float32, sites in order)."""
        if not self.config.allow_vector_updates:
            raise RequestError(
                "This server does not accept new vectors (started with --no-allow-vector-updates).",
                status=403,
                type="permission_error",
            )
        name = body.get("name")
        _check_name(name)
        if ("path" in body) == ("data" in body):
            raise RequestError(
                'Send either "path" (a .safetensors file under the server\'s vector directory)'
                ' or "data" (base64 float32) with "site", plus "name".',
                param="path",
            )
        if "path" in body:
            vec, source = self._from_file(body["path"]), f"file:{body['path']}"
        else:
            vec, source = self._from_data(body), "inline"
        return self.add(name, vec, source)

    def _from_file(self, raw: Any) -> SteeringVector:
        if self.vector_dir is None:
            raise RequestError(
                "This server has no vector directory, so it cannot add vectors from files; "
                'restart it with --vectors DIR (or --vector-dir DIR), or send "data" inline.',
                status=403,
                type="permission_error",
                param="path",
            )
        if not isinstance(raw, str) or not raw:
            raise RequestError(f"path={raw!r} must be a file name.", param="path")
        path = (self.vector_dir / raw).resolve()
        if not path.is_relative_to(self.vector_dir):
            raise RequestError(
                f"path={raw!r} is outside the server's vector directory; name a file under "
                f"{str(self.vector_dir)!r}.",
                status=403,
                type="permission_error",
                param="path",
            )
        if path.suffix != ".safetensors":
            raise RequestError(
                f"path={raw!r} is not a .safetensors file; save vectors with "
                "SteeringVector.save() (BiPO .pt files: SteeringVector.from_bipo_pt).",
                param="path",
            )
        if not path.is_file():
            raise RequestError(
                f"No file {raw!r} in the vector directory {str(self.vector_dir)!r}.",
                status=404,
                type="not_found_error",
                param="path",
            )
        if path.stat().st_size > self.config.max_vector_bytes + 65536:
            raise RequestError(
                f"{raw!r} has {path.stat().st_size} bytes; this server accepts vectors of at "
                f"most {self.config.max_vector_bytes} bytes (--max-vector-bytes).",
                status=413,
                param="path",
            )
        try:
            return SteeringVector.load(path)
        except SteerlabError as exc:
            raise RequestError(str(exc), param="path") from None

    def _from_data(self, body: dict[str, Any]) -> SteeringVector:
        sites_raw = body.get("sites", [body["site"]] if "site" in body else None)
        if not isinstance(sites_raw, list) or not sites_raw:
            raise RequestError(
                'Inline vectors need "site" (e.g. "10" or "10.resid_post") or a list "sites".',
                param="site",
            )
        sites = []
        for s in sites_raw:
            try:
                sites.append(HookSite.parse(s).resolve(self.model.n_layers))
            except SteerlabError as exc:
                raise RequestError(f"site={s!r}: {exc}", param="site") from None
        if len(set(sites)) != len(sites):
            raise RequestError(f"sites={sites_raw!r} names a site twice.", param="sites")
        data = body.get("data")
        if not isinstance(data, str):
            raise RequestError('"data" must be a base64 string of float32 values.', param="data")
        if len(data) * 3 // 4 > self.config.max_vector_bytes:
            raise RequestError(
                f"The vector data has about {len(data) * 3 // 4} bytes; this server accepts at "
                f"most {self.config.max_vector_bytes} (--max-vector-bytes).",
                status=413,
                param="data",
            )
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError('"data" is not valid base64.', param="data") from None
        d = self.model.d_model
        if len(raw) != 4 * d * len(sites):
            raise RequestError(
                f'"data" holds {len(raw)} bytes; {len(sites)} site(s) of this model need '
                f"{len(sites)} x d_model={d} float32 values = {4 * d * len(sites)} bytes.",
                param="data",
                code="vector_does_not_fit",
            )
        values = torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(len(sites), d)
        if not bool(torch.isfinite(values).all()):
            raise RequestError(
                f'"data" has {int((~torch.isfinite(values)).sum())} NaN/inf values; send '
                "finite float32 values.",
                param="data",
            )
        behavior = body.get("behavior", "")
        prov = Provenance(
            method="inline",
            model_id=self.model.model_id,
            behavior=behavior if isinstance(behavior, str) else "",
        )
        try:
            return SteeringVector(dict(zip(sites, values.clone())), prov)
        except SteerlabError as exc:
            raise RequestError(str(exc), param="data") from None
