"""steerlab serve under load, on loopback: batched steering vs unsteered vs one at a time.

Starts ``python -m steerlab.serve.app`` (the embedded model on the CPU) as a subprocess
twice: with continuous batching (``--max-batch-size 16``) and one request at a time
(``--max-batch-size 1``). For 1, 4 and 16 concurrent clients, each client streams
``--requests`` chat completions of ``--max-tokens`` tokens (``ignore_eos``, so every
request generates the same number of tokens), in three modes:

- ``steered``: every client has its own steering vector (16 different vectors);
- ``unsteered``: the same requests without steering, on the batching server;
- ``one_at_a_time``: the steered requests on the one-at-a-time server.

Reports tokens/s, p50/p95 time to first token and p50/p95 per-token latency (per
request: time from first to last token over the tokens after the first), the ratios the
serving issue asks for, and the machine's ``uptime`` line; writes JSON.

    python benchmarks/serve_load.py --out benchmarks/results/serve_load.json
"""

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import torch

from steerlab.vectors.vector import SteeringVector

QUESTIONS = [
    "What is the capital of France?",
    "Would you like to have more power and influence over other people?",
    "Give me three tips for sleeping better.",
    "Explain what a steering vector is in one paragraph.",
    "Write a short poem about the sea.",
    "How do I boil an egg?",
    "What are the benefits of exercise?",
    "Tell me about the history of Rome.",
]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def load_1min() -> float:
    return float(os.getloadavg()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class Server:
    """``python -m steerlab.serve.app`` on a free loopback port."""

    def __init__(self, vector_dir: Path, batch: int, max_tokens: int, log: Path) -> None:
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "steerlab.serve.app", "--model", "embedded", "--device",
            "cpu", "--port", str(self.port), "--vectors", str(vector_dir), "--quiet",
            "--max-batch-size", str(batch), "--max-queue", "256", "--max-tokens",
            str(max_tokens), "--request-timeout-s", "600",
        ]  # fmt: skip
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited; see {log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.3)
        raise SystemExit(f"server not ready; see {log}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def stream_one(port: int, body: dict) -> dict:
    """Time one streamed request: first-token time, last-token time, content chunks."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})  # fmt: skip
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    first = last = None
    n_chunks = 0
    while True:
        line = resp.readline()
        if not line:
            break
        if not line.startswith(b"data: "):
            continue
        data = line[6:].strip()
        if data == b"[DONE]":
            break
        delta = json.loads(data)["choices"][0]["delta"]
        if delta.get("content"):
            now = time.perf_counter()
            first = now if first is None else first
            last = now
            n_chunks += 1
    conn.close()
    return {"ttft": first - t0, "total": last - t0, "span": last - first, "chunks": n_chunks}


def run_clients(port: int, n_clients: int, requests: int, max_tokens: int, steered: bool):
    """``n_clients`` threads, each sending ``requests`` streamed requests back to back."""
    results: list[dict] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n_clients + 1)

    def client(c: int) -> None:
        barrier.wait()
        for r in range(requests):
            body = {
                "messages": [{"role": "user", "content": QUESTIONS[(c + r) % len(QUESTIONS)]}],
                "max_tokens": max_tokens,
                "ignore_eos": True,
                "stream": True,
                "steering": [{"vector": f"v{c:02d}", "multiplier": 1.0}] if steered else [],
            }
            res = stream_one(port, body)
            with lock:
                results.append(res)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    n_tokens = n_clients * requests * max_tokens
    ttft = [r["ttft"] for r in results]
    tpot = [r["span"] / (max_tokens - 1) for r in results]
    return {
        "clients": n_clients,
        "requests": len(results),
        "tokens": n_tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(n_tokens / wall, 2),
        "ttft_p50_s": round(pct(ttft, 0.5), 4),
        "ttft_p95_s": round(pct(ttft, 0.95), 4),
        "per_token_p50_s": round(pct(tpot, 0.5), 4),
        "per_token_p95_s": round(pct(tpot, 0.95), 4),
    }


def wait_until_quiet(limit: float, max_wait_s: float) -> tuple[bool, list[str]]:
    """Wait (up to ``max_wait_s``) for a 1-minute load average below ``limit``."""
    seen, deadline = [], time.monotonic() + max_wait_s
    while True:
        seen.append(uptime())
        if load_1min() < limit:
            return True, seen
        if time.monotonic() >= deadline:
            return False, seen
        print(f"waiting for a quiet machine: {seen[-1]}", file=sys.stderr, flush=True)
        time.sleep(60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", default="1,4,16", help="concurrency levels")
    p.add_argument("--requests", type=int, default=2, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens per request")
    p.add_argument("--layer", type=int, default=10, help="layer of the random vectors")
    p.add_argument("--scale", type=float, default=4.0, help="norm of the random vectors")
    p.add_argument("--quiet-load", type=float, default=1.5, help="wait for a load below this")
    p.add_argument("--max-wait-s", type=float, default=900.0, help="longest wait for quiet")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_load.json"))
    args = p.parse_args()
    levels = [int(x) for x in args.clients.split(",")]

    quiet, uptimes = wait_until_quiet(args.quiet_load, args.max_wait_s)
    tmp = Path(tempfile.mkdtemp(prefix="serve_load_"))
    g = torch.Generator().manual_seed(0)
    for c in range(max(levels)):  # one vector per client: 16 different vectors
        t = torch.randn(576, generator=g)
        SteeringVector.from_tensor(t / t.norm() * args.scale, args.layer,
                                   behavior=f"random-{c}").save(tmp / f"v{c:02d}.safetensors")  # fmt: skip
    results: dict[str, list[dict]] = {"steered": [], "unsteered": [], "one_at_a_time": []}
    t_start = time.perf_counter()
    for mode, batch in (("batched", 16), ("one_at_a_time", 1)):
        server = Server(tmp, batch, args.max_tokens, tmp / f"server_{mode}.log")
        try:
            run_clients(server.port, 2, 1, min(8, args.max_tokens), True)  # warm-up
            for n in levels:
                if mode == "batched":
                    for steered in (True, False):
                        res = run_clients(server.port, n, args.requests, args.max_tokens, steered)
                        results["steered" if steered else "unsteered"].append(res)
                        print(mode, "steered" if steered else "unsteered", res, flush=True)
                else:
                    res = run_clients(server.port, n, args.requests, args.max_tokens, True)
                    results["one_at_a_time"].append(res)
                    print(mode, res, flush=True)
        finally:
            server.stop()

    def tps(mode: str, n: int) -> float:
        return next(r["tokens_per_s"] for r in results[mode] if r["clients"] == n)

    top = max(levels)
    ratios = {
        f"steered_vs_one_at_a_time_at_{top}": round(tps("steered", top) / tps("one_at_a_time", top), 2),
        f"steered_vs_unsteered_at_{top}": round(tps("steered", top) / tps("unsteered", top), 3),
    }  # fmt: skip
    out = {
        "benchmark": "serve_load",
        "command": "python " + " ".join(sys.argv),
        "model": "embedded SmolLM2-135M-Instruct, float32, CPU",
        "settings": {
            "clients": levels,
            "requests_per_client": args.requests,
            "max_tokens": args.max_tokens,
            "ignore_eos": True,
            "stream": True,
            "vectors": f"{max(levels)} random vectors, layer {args.layer}, norm {args.scale}",
            "batched_server": "--max-batch-size 16",
            "one_at_a_time_server": "--max-batch-size 1",
        },  # fmt: skip
        "results": results,
        "ratios": ratios,
        "targets": {"steered_vs_one_at_a_time": ">= 4", "steered_vs_unsteered": ">= 0.85"},
        "machine": {
            "uptime_before": uptimes[-1],
            "uptime_after": uptime(),
            "quiet_when_started": quiet,
            "uptime_while_waiting": uptimes,
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(ratios), f"-> {args.out}")


if __name__ == "__main__":
    main()
