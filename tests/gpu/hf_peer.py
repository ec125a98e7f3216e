#!/usr/bin/env python3
"""The in-run peer of the GPU check: transformers' own continuous batching (its
`ContinuousBatchingManager` with paged attention, what `generate_batch` and `transformers
serve` run on) behind a minimal OpenAI-compatible HTTP server, so that inferd-bench
measures it exactly as it measures inferd.

    hf_peer.py --model DIR --port 8081 [--served-name ID]

Endpoints: GET /health, GET /v1/models, POST /v1/completions (prompt as a string or token
ids; greedy only; `max_tokens`, `ignore_eos`, `stream` with SSE chunks and
`stream_options.include_usage`). Prompts are tokenized with the model's tokenizer.json as
inferd does (no special tokens from the text, BOS first when tokenizer_config.json says
add_bos_token), so both servers get the same token ids for the same text.

Written against transformers 5.x: `model.init_continuous_batching(generation_config)`,
`manager.start()`, `add_request(input_ids, request_id, max_new_tokens, streaming)`,
`get_result(timeout)` and `stop()`; one dispatcher thread drains the manager's output
queue and hands each output to its request (`request_id_iter` re-queues outputs that are
not its own, which does not scale to 64 streams). Only the standard library and what the
GPU host has (torch, transformers, tokenizers).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import queue
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class BadRequest(Exception):
    pass


def finished(out: Any) -> bool:
    f = getattr(out, "is_finished", None)
    if callable(f):
        return bool(f())
    return str(getattr(out, "status", "")).upper().endswith(("FINISHED", "FAILED"))


def failed(out: Any) -> str | None:
    err = getattr(out, "error", None)
    if err:
        return str(err)
    if str(getattr(out, "status", "")).upper().endswith("FAILED"):
        return "generation failed"
    return None


class Engine:
    """The model, the manager and the dispatcher of its outputs."""

    def __init__(self, model_dir: Path, warmup: bool) -> None:
        import torch
        import transformers
        from tokenizers import Tokenizer
        from transformers import AutoModelForCausalLM, GenerationConfig

        self.versions = {"torch": torch.__version__, "transformers": transformers.__version__}
        t0 = time.monotonic()
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch.bfloat16, device_map="cuda", attn_implementation="sdpa"
        )
        self.model.eval()
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tcfg = json.loads((model_dir / "tokenizer_config.json").read_text())
        self.bos = self.tokenizer.token_to_id(tcfg["bos_token"]) if tcfg.get("add_bos_token") else None
        eos = self.model.config.eos_token_id
        self.eos = eos if isinstance(eos, int) else (eos[0] if eos else -1)
        gen = GenerationConfig(do_sample=False, max_new_tokens=128, eos_token_id=self.eos, pad_token_id=self.eos)
        self.manager = self._manager(gen)
        params = inspect.signature(self.manager.add_request).parameters
        self.per_request_eos = "eos_token_id" in params
        self.streaming_arg = "streaming" in params
        t1 = time.monotonic()
        if warmup and hasattr(self.manager, "warmup"):
            self.manager.warmup()
        t2 = time.monotonic()
        self.manager.start()
        self.waiters: dict[str, queue.Queue[Any]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.dispatcher = threading.Thread(target=self._dispatch, daemon=True)
        self.dispatcher.start()
        attn = getattr(self.model.config, "_attn_implementation", "?")
        print(
            f"hf_peer: transformers {transformers.__version__}, torch {torch.__version__}, attention {attn}; "
            f"loaded in {t1 - t0:.1f} s, warm-up {t2 - t1:.1f} s; per-request eos: {self.per_request_eos}",
            flush=True,
        )

    def _manager(self, gen: Any) -> Any:
        # transformers >= 5.x switches the model to "paged|<impl>" itself; earlier 5.x
        # releases needed the paged implementation chosen first.
        errors = []
        for attn in (None, "paged|sdpa", "sdpa_paged"):
            try:
                if attn is not None:
                    self.model.set_attn_implementation(attn)
                return self.model.init_continuous_batching(generation_config=gen)
            except Exception as e:  # noqa: BLE001 - try the next spelling, report all
                errors.append(f"{attn or 'default'}: {e}")
        raise RuntimeError("init_continuous_batching failed: " + "; ".join(errors))

    def _dispatch(self) -> None:
        while not self.stopping.is_set():
            out = self.manager.get_result(timeout=0.05)
            if out is None:
                continue
            with self.lock:
                q = self.waiters.get(out.request_id)
            if q is not None:
                q.put(out)

    def encode(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            ids = list(prompt)
        elif isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids
            if self.bos is not None:
                ids = [self.bos] + ids
        else:
            raise BadRequest("prompt must be a string or a list of token ids")
        if not ids:
            raise BadRequest("empty prompt")
        return ids

    def submit(self, ids: list[int], max_tokens: int, ignore_eos: bool, stream: bool) -> tuple[str, queue.Queue[Any]]:
        rid = f"cmpl-{uuid.uuid4().hex}"
        q: queue.Queue[Any] = queue.Queue()
        with self.lock:
            self.waiters[rid] = q
        kwargs: dict[str, Any] = {"input_ids": ids, "request_id": rid, "max_new_tokens": max_tokens}
        if self.streaming_arg:
            kwargs["streaming"] = stream
        if self.per_request_eos:
            kwargs["eos_token_id"] = -1 if ignore_eos else self.eos
        self.manager.add_request(**kwargs)
        return rid, q

    def outputs(self, rid: str, q: queue.Queue[Any], timeout: float = 600.0):
        """Yield the request's outputs until the finished one."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{rid}: no result after {timeout:.0f} s")
                try:
                    out = q.get(timeout=min(left, 1.0))
                except queue.Empty:
                    if not self.manager.is_running():
                        raise RuntimeError("the generation loop stopped")
                    continue
                yield out
                if finished(out):
                    return
        finally:
            with self.lock:
                self.waiters.pop(rid, None)

    def stop(self) -> None:
        self.stopping.set()
        self.manager.stop(block=True, timeout=10)


class Detok:
    """Incremental detokenization: the text of all tokens so far, diffed."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.emitted = ""

    def push(self, tokens: list[int], final: bool = False) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return ""  # an incomplete UTF-8 character: wait for its next byte
        delta = text[len(self.emitted):] if text.startswith(self.emitted) else ""
        self.emitted = text if text.startswith(self.emitted) else self.emitted
        return delta


def make_handler(engine: Engine, served_name: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the bench has the figures
            pass

        def _json(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str, kind: str = "invalid_request_error") -> None:
            self._json(code, {"error": {"message": message, "type": kind, "param": None, "code": None}})

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200, {"status": "ok"})
            elif self.path == "/v1/models":
                self._json(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {
                                "id": served_name,
                                "object": "model",
                                "created": 0,
                                "owned_by": f"transformers {engine.versions['transformers']} continuous batching",
                            }
                        ],
                    },
                )
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            if self.path != "/v1/completions":
                self._error(404, f"no route {self.path}")
                return
            try:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if body.get("model") not in (None, served_name):
                    self._error(404, f"model {body.get('model')!r} does not exist")
                    return
                if float(body.get("temperature", 0) or 0) != 0:
                    raise BadRequest("this peer is greedy only: temperature must be 0")
                for key in ("logprobs", "n", "best_of", "echo", "suffix"):
                    if body.get(key) not in (None, 1 if key in ("n", "best_of") else None, False):
                        raise BadRequest(f"{key} is not supported by this peer")
                ids = engine.encode(body.get("prompt"))
                max_tokens = int(body.get("max_tokens") or 16)
                if max_tokens < 1:
                    raise BadRequest("max_tokens must be positive")
                ignore_eos = bool(body.get("ignore_eos", False))
                stream = bool(body.get("stream", False))
                usage_chunk = bool((body.get("stream_options") or {}).get("include_usage"))
            except (BadRequest, ValueError, TypeError) as e:
                self._error(400, str(e))
                return
            rid, q = engine.submit(ids, max_tokens, ignore_eos, stream)
            created = int(time.time())
            if stream:
                self._stream(rid, q, ids, max_tokens, created, usage_chunk)
            else:
                self._whole(rid, q, ids, max_tokens, created)

        def _usage(self, prompt: list[int], n: int) -> dict[str, Any]:
            return {
                "prompt_tokens": len(prompt),
                "completion_tokens": n,
                "total_tokens": len(prompt) + n,
                "prompt_tokens_details": {"cached_tokens": 0},
            }

        def _whole(self, rid: str, q: queue.Queue[Any], prompt: list[int], max_tokens: int, created: int) -> None:
            last = None
            try:
                for out in engine.outputs(rid, q):
                    last = out
            except Exception as e:  # noqa: BLE001
                self._error(500, str(e), "internal_error")
                return
            err = failed(last)
            if err:
                self._error(500, err, "internal_error")
                return
            tokens = list(last.generated_tokens)
            text = engine.tokenizer.decode(tokens, skip_special_tokens=True)
            reason = "length" if len(tokens) >= max_tokens else "stop"
            self._json(
                200,
                {
                    "id": rid,
                    "object": "text_completion",
                    "created": created,
                    "model": served_name,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
                    "usage": self._usage(prompt, len(tokens)),
                },
            )

        def _chunk(self, payload: str) -> None:
            data = f"data: {payload}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _stream(
            self, rid: str, q: queue.Queue[Any], prompt: list[int], max_tokens: int, created: int, usage: bool
        ) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            base = {"id": rid, "object": "text_completion", "created": created, "model": served_name}
            detok = Detok(engine.tokenizer)
            tokens: list[int] = []
            try:
                for out in engine.outputs(rid, q):
                    err = failed(out)
                    if err:
                        raise RuntimeError(err)
                    tokens = list(out.generated_tokens)
                    delta = detok.push(tokens, final=finished(out))
                    if delta:
                        choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": None}
                        self._chunk(json.dumps({**base, "choices": [choice]}))
                reason = "length" if len(tokens) >= max_tokens else "stop"
                choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": reason}
                self._chunk(json.dumps({**base, "choices": [choice]}))
                if usage:
                    self._chunk(json.dumps({**base, "choices": [], "usage": self._usage(prompt, len(tokens))}))
            except (BrokenPipeError, ConnectionResetError):
                cancel = getattr(engine.manager, "cancel_request", None)
                if callable(cancel):
                    cancel(rid)
                return
            except Exception as e:  # noqa: BLE001 - an in-band error event, as inferd sends
                self._chunk(json.dumps({"error": {"message": str(e), "type": "internal_error"}}))
            self._chunk("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="model directory (save_pretrained)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--served-name", help="model id in the API (default: the directory name)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the manager's CUDA-graph warm-up")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    engine = Engine(args.model, warmup=not args.no_warmup)
    name = args.served_name or args.model.name
    server = ThreadingHTTPServer((args.host, args.port), make_handler(engine, name))
    server.daemon_threads = True

    def shutdown(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    print(f"hf_peer: serving {name} on http://{args.host}:{args.port}/v1", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
