"""``sftlab serve``: an OpenAI-compatible HTTP server for a model or checkpoint."""

from __future__ import annotations

import typer

from sftlab.serve.schemas import ServeLimits


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        model: str = typer.Option(..., "--model", help="Model folder or hub id; an sftlab "
                                  "LoRA/DoRA checkpoint folder also works (base read from it)."),
        adapter: str | None = typer.Option(None, "--adapter", help="PEFT adapter folder to merge."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by "
                                 "default; 0.0.0.0 exposes the server to the network)."),
        port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port; 0 picks a free one."),
        name: str | None = typer.Option(None, "--name", help="Served model name "
                                        "(default: the model folder's name)."),
        template: str | None = typer.Option(None, "--template", help="Study template "
                                            "('...{instruction}...{response}') for chat requests; "
                                            "default: the tokenizer's chat template."),
        max_batch: int = typer.Option(8, "--max-batch", min=1, help="Rows per model call."),
        max_queue: int = typer.Option(64, "--max-queue", min=1,
                                      help="Waiting requests before answering 503."),
        batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", min=0.0,
                                            help="How long to collect requests into a batch."),
        max_body_bytes: int = typer.Option(ServeLimits.max_body_bytes, "--max-body-bytes",
                                           min=1, help="Largest request body; a larger one "
                                           "gets 413 before it is parsed."),
        max_rows: int = typer.Option(ServeLimits.max_rows, "--max-rows", min=1,
                                     help="Most prompts x n in one request (else 400)."),
        max_request_tokens: int = typer.Option(
            ServeLimits.max_request_tokens, "--max-request-tokens", min=1,
            help="Most prompt tokens + max_tokens, summed over a request's rows (else 400)."),
        dtype: str = typer.Option("auto", "--dtype", help="auto|float32|bfloat16|float16."),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ..."),
        trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    ) -> None:
        """Serve a model over OpenAI's HTTP API (/v1/models, /v1/completions, /v1/chat/completions)."""
        from sftlab.errors import UserError
        from sftlab.serve.server import ServeOptions, serve
        from sftlab.study.template import template_problems

        if dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise UserError(f"--dtype: unknown dtype {dtype!r} (auto, float32, bfloat16, float16)")
        if template is not None and template_problems(template):
            raise UserError(template_problems(template), where="--template")
        serve(ServeOptions(model=model, adapter=adapter, host=host, port=port, name=name,
                           template=template, max_batch=max_batch, max_queue=max_queue,
                           batch_wait_ms=batch_wait_ms, dtype=dtype, device=device,
                           trust_remote_code=trust_remote_code,
                           limits=ServeLimits(max_body_bytes=max_body_bytes, max_rows=max_rows,
                                              max_request_tokens=max_request_tokens)))
