"""fp32 linear maps through oneDNN on CPUs where torch's BLAS runs its slow kernels.

PyTorch's x86 CPU wheels run fp32 matmuls (``F.linear``, ``torch.mm``) through MKL, and
MKL takes its AVX2 kernels on AMD CPUs even where they have AVX-512. On this project's
machine (AMD EPYC, Zen 5, 2 cores) that is 210-228 GFLOP/s, while the oneDNN library in the
same wheel (``torch.ops.mkldnn._linear_pointwise``, which dispatches on the CPU's
instruction sets, not its vendor) runs the same fp32 products at 465-503 GFLOP/s: the
decoder blocks' shapes ([420, 576] x [576, 1536] and back) and square 2048 alike, the
transposed weight of the backward as fast as the plain one, and a [200, 576] x [576,
49152] unembedding at 328 against 163 (``benchmarks/cpu_gemm.py``). Both are fp32
products (largest error against float64 5.9e-6 vs 2.3e-6; not a bf16 shortcut). On an AMD
CPU without AVX-512 (session 18's machine, ~70 GFLOP/s either way) the two are close:
oneDNN ran the fast metrics and generation in 0.84-0.88x the time and BiPO steps in 1.10x
(``benchmarks/results/onednn_avx2.json``); ``STEERLAB_CPU_GEMM=blas`` suits training there.

:func:`linear` is ``F.linear`` with a oneDNN forward and backward where
:func:`onednn_applies` holds (CPU, fp32 tensors, no autocast, oneDNN built in, this
module on), and ``F.linear`` itself elsewhere (GPUs, bf16, autocast). Which CPUs get it
is :func:`default_backend`: ``STEERLAB_CPU_GEMM=onednn`` or ``blas`` decides; otherwise
(``auto``) AMD x86 CPUs do, others keep the BLAS, whose kernels are vendor-tuned on
Intel's CPUs. :func:`use_onednn` overrides it for a block of code (A/B runs, parity tests).
The fast paths' hook-free blocks, their log-prob heads and the fast metrics' heads call it,
and :func:`route_linears` points a model's ``nn.Linear`` modules at it (``load_model``
does so for CPU models), so the bridge's forward and generation take it too. It changes
speed only; values move within fp32 rounding (tests compare both backends).
:func:`packed_weights` lets a run that multiplies by the same frozen weights thousands of
times (fp32 BiPO on a CPU) use copies packed once into oneDNN's layout: the same numbers.
"""

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache, partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from steerlab.errors import ConfigError

#: ``STEERLAB_CPU_GEMM`` values.
BACKENDS = ("auto", "onednn", "blas")

#: oneDNN keeps a compiled primitive, with its scratch memory, per shape it has run, up to
#: this many (its default is 1024). Token counts change every step, so the default kept
#: hundreds: a 160-pair BiPO epoch on the embedded model peaked 858 MiB above its cache
#: with 1024, 577 with 32 and 554 through the BLAS, at about the same speed (17.2 and
#: 18.1 s; ``benchmarks/cpu_gemm.py --memory``). Set when steerlab is imported, before oneDNN's first
#: use (it reads the variable once); a value already in the environment wins.
PRIMITIVE_CACHE_CAPACITY = 32
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(PRIMITIVE_CACHE_CAPACITY))

_override: ContextVar[bool | None] = ContextVar("steerlab_onednn", default=None)


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def has_onednn() -> bool:
    """Whether this torch build has oneDNN's fp32 linear map."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(
        torch.ops.mkldnn, "_linear_pointwise"
    )


@cache
def default_backend() -> str:
    """``"onednn"`` or ``"blas"``: what :func:`linear` uses on CPU fp32 tensors unless
    :func:`use_onednn` says otherwise (``STEERLAB_CPU_GEMM``, else by the CPU's vendor)."""
    choice = os.environ.get("STEERLAB_CPU_GEMM", "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        raise ConfigError(f"STEERLAB_CPU_GEMM={choice!r}: choose one of {', '.join(BACKENDS)}")
    if choice == "onednn" and not has_onednn():
        raise ConfigError("STEERLAB_CPU_GEMM=onednn, but this torch build has no oneDNN")
    if choice == "auto":
        amd = platform.machine().lower() in ("x86_64", "amd64") and _cpu_vendor() == "AuthenticAMD"
        choice = "onednn" if amd and has_onednn() else "blas"
    return choice


@contextmanager
def use_onednn(enabled: bool) -> Iterator[None]:
    """Meanwhile, run CPU fp32 linear maps through oneDNN (True) or torch's BLAS
    (False), whatever :func:`default_backend` says."""
    if enabled and not has_onednn():
        raise ConfigError("this torch build has no oneDNN (torch.backends.mkldnn)")
    token = _override.set(enabled)
    try:
        yield
    finally:
        _override.reset(token)


def _onednn_on() -> bool:
    """Whether CPU fp32 products go through oneDNN here: :func:`use_onednn`'s setting,
    else :func:`default_backend`."""
    on = _override.get()
    return default_backend() == "onednn" if on is None else on


def onednn_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether :func:`linear` takes oneDNN for these tensors."""
    return (
        _onednn_on()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and x.shape[-1] > 0  # oneDNN refuses an empty inner dimension; F.linear gives 0
    )


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias`` by oneDNN directly, whatever the backend setting (fp32 or
    bf16 CPU tensors; no autograd); by a pre-packed copy of ``weight`` inside
    :func:`packed_weights`."""
    packs = _packs.get()
    if packs is not None and x.dim() == 2 and x.shape[0] >= PACKED_MIN_ROWS:
        packed = packs.get(weight)
        if packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


#: The fewest rows a product takes a pre-packed weight with: oneDNN's kernel for a single
#: row rounds otherwise than the packed product (its last bits differ), while from 37 rows
#: up the two gave bitwise the same results on the Zen 4 (tested from 64 rows on).
PACKED_MIN_ROWS = 64

#: Pre-packed copies (with their transposes) are made only while they take at most this
#: many bytes: a CPU model's upper blocks are copied twice more, so a large model trains
#: without them rather than run out of memory.
PACKED_WEIGHTS_MAX_BYTES = 2 * 2**30


class _Packs:
    """Frozen fp32 weights and their oneDNN-packed copies, made on first use per view
    (the weight, its transpose for the backward, a slice of rows), keyed by the view's
    address, shape and strides; a weight changed in place since it was registered
    (its version counter moved) or replaced is used as is."""

    def __init__(self, weights: list[Tensor]) -> None:
        self.owners = {w.untyped_storage().data_ptr(): (w, w._version) for w in weights}
        self.copies: dict[tuple[int, tuple[int, ...], tuple[int, ...]], Tensor] = {}

    def get(self, weight: Tensor) -> Tensor | None:
        owner = self.owners.get(weight.untyped_storage().data_ptr())
        if owner is None or owner[0]._version != owner[1] or weight.dtype != torch.float32:
            return None
        key = (weight.data_ptr(), tuple(weight.shape), tuple(weight.stride()))
        packed = self.copies.get(key)
        if packed is None:  # oneDNN's blocked layout for products of about 512 rows
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 512)
            self.copies[key] = packed
        return packed


_packs: ContextVar[_Packs | None] = ContextVar("steerlab_packed_weights", default=None)


@contextmanager
def packed_weights(weights: "list[Tensor]") -> Iterator[bool]:
    """Meanwhile, fp32 CPU products through oneDNN by ``weights`` (or views of them: their
    transposes in the backward, slices of rows) use copies reordered once into oneDNN's
    blocked layout, instead of the plain weight, which oneDNN reorders on every call.
    The weights must stay as they are meanwhile (one changed in place is used plain).
    Yields whether the copies are made: only where oneDNN is the backend for fp32 CPU
    tensors and the copies (the weights and their transposes, made on first use) take
    at most :data:`PACKED_WEIGHTS_MAX_BYTES`. The results equal the plain products bitwise
    (tested) for products of at least :data:`PACKED_MIN_ROWS` rows; smaller ones run
    plain. On the Zen 4 an fp32 BiPO epoch of the embedded model took 0.92x the time,
    the packing included, for about 600 MB more memory (``benchmarks/shared_prefix.py
    --toggle packed --rounds 0 --epoch-rounds 3``; ``benchmarks/bipo_speed.py``)."""
    ws = [w for w in weights if w.device.type == "cpu" and w.dtype == torch.float32]
    size = 2 * sum(w.numel() * w.element_size() for w in ws)
    if not (_onednn_on() and ws and has_onednn() and size <= PACKED_WEIGHTS_MAX_BYTES):
        yield False
        return
    token = _packs.set(_Packs(ws))
    try:
        yield True
    finally:
        _packs.reset(token)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        # the input only where the weight's gradient needs it, as F.linear does: saving it
        # always keeps every linear input alive until the backward (6 BiPO steps of the
        # embedded model, a probe outside the repository: 339 MiB peak instead of 232; F.linear's 188)
        ctx.save_for_backward(x if weight.requires_grad else None, weight)
        ctx.has_bias = bias is not None
        return onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_x = onednn_linear(grad, weight.t()) if need_x else None
        grad_w = grad_b = None
        if need_w or (need_b and ctx.has_bias):
            g2 = grad.reshape(-1, grad.shape[-1])
            if need_w:  # [out, n] x [n, in] as a linear map of g2.T by the weight x2.T
                grad_w = onednn_linear(g2.t(), x.reshape(-1, x.shape[-1]).t())
            grad_b = g2.sum(0) if need_b and ctx.has_bias else None
        return grad_x, grad_w, grad_b


def matmul_t(x: Tensor, weight: Tensor, out: Tensor | None = None) -> Tensor:
    """``x @ weight.T`` for 2-D tensors outside autograd (inside a custom backward or a
    no-grad forward), through oneDNN where :func:`onednn_applies`; into ``out`` if given
    (the BLAS writes there directly, oneDNN's result is copied)."""
    if not onednn_applies(x, weight):
        return torch.mm(x, weight.t(), out=out)
    y = onednn_linear(x, weight)
    return y if out is None else out.copy_(y)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN where :func:`onednn_applies`."""
    if not onednn_applies(x, weight):
        return F.linear(x, weight, bias)
    needs_grad = (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if needs_grad and torch.is_grad_enabled():
        return _Linear.apply(x, weight, bias)
    return onednn_linear(x, weight, bias)  # no graph to record: skip the autograd function


def _module_forward(module: torch.nn.Linear, x: Tensor) -> Tensor:
    return linear(x, module.weight, module.bias)


def route_linears(model: torch.nn.Module) -> int:
    """Make every ``nn.Linear`` of ``model`` compute through :func:`linear` (an instance
    ``forward``; hooks on the modules still run); the number of modules routed. Subclasses
    (quantized or LoRA layers) keep their own forward. A wrong ``STEERLAB_CPU_GEMM`` is
    refused here, at load time, not at the first matmul."""
    default_backend()
    n = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.forward = partial(_module_forward, module)
            n += 1
    return n
