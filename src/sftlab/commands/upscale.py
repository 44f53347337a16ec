"""``sftlab upscale``: depth up-scaling of a model into a new folder (``sftlab.methods.upscale``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sftlab.errors import UserError


def register(app: typer.Typer) -> None:
    """Add the ``upscale`` command to ``app``."""

    @app.command("upscale")
    def upscale_command(
        model: str = typer.Option(..., "--model", help="Model folder, hub id or tiny:<arch>."),
        strategy: str = typer.Option(..., "--strategy", help="solar, llama_pro or opt_deus."),
        layers: int = typer.Option(..., "--layers", min=1, help="Decoder layers of the result."),
        out: Path = typer.Option(..., "--out", help="Folder to create (must not exist)."),
        trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                               help="Allow the model's own code."),
        as_json: bool = typer.Option(False, "--json", help="Print the layer plan as JSON."),
    ) -> None:
        """Make a model deeper: SOLAR (duplicate and trim), LLaMA-Pro (identity copies) or
        OpT-DeUS (identity layers fused from their neighbours by optimal transport).

        The result loads with plain transformers; its sftlab_upscale.json records which
        base layer(s) each layer comes from and which are new (for `trainable: new`).
        """
        from sftlab.methods.upscale import STRATEGIES, upscale_model
        from sftlab.study.resolve import resolve_model_path

        if strategy not in STRATEGIES:
            raise UserError(f"unknown strategy '{strategy}' (expected one of: "
                            f"{', '.join(STRATEGIES)})", where="--strategy")
        if out.exists():
            raise UserError(f"{out} exists; choose a new folder", where="--out")
        record = upscale_model(resolve_model_path(model), strategy, layers, out,
                               trust_remote_code=trust_remote_code)
        if as_json:
            print(json.dumps(record, indent=1))
            return
        print(f"{model}: {record['base_layers']} -> {record['layers']} layers ({strategy}) in "
              f"{out}; new layers {record['new_layers']}")
