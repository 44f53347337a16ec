"""``sftlab models``: model sources (aliases, GGUF files, package files) and conversion."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import typer

from sftlab.errors import UserError


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group to ``app``."""
    models = typer.Typer(help="Model sources: list aliases, convert GGUF / package files.",
                         no_args_is_help=True)
    app.add_typer(models, name="models")

    @models.command("convert")
    def convert(
        source: str = typer.Argument(..., help="A .gguf file, pkg:<package>/<file>, or an "
                                               "alias (see `sftlab models list`)."),
        out: Path = typer.Option(..., "--out", help="Folder to write (must not exist or be empty)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Convert a model file into a plain safetensors folder (fp32 weights, tokenizer,
        chat template) that loads with transformers alone; the same folder a study
        caches when its model path names the file."""
        from sftlab.models.convert import SOURCE_FILE, convert_gguf
        from sftlab.models.sources import is_file_source, locate_file

        if not is_file_source(source):
            raise UserError(f"'{source}' is not a model file source (a .gguf path, "
                            "pkg:<package>/<file> or an alias from `sftlab models list`)")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"--out {out}: exists and is not an empty folder")
        path = locate_file(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
        try:
            convert_gguf(path, tmp)
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        info = json.loads((out / SOURCE_FILE).read_text())
        if as_json:
            print(json.dumps({"path": str(out), "source": source, **info}))
        else:
            print(f"converted {path.name} ({info['parameters']:,} parameters, sha256 "
                  f"{info['sha256'][:12]}) -> {out}")

    @models.command("list")
    def list_aliases(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """The model aliases a study or --model may name, and how to install each."""
        from sftlab.models.sources import ALIASES

        rows = [{"alias": name, "source": a.source, "install": a.install,
                 "description": a.description} for name, a in ALIASES.items()]
        if as_json:
            print(json.dumps(rows, indent=1))
            return
        for row in rows:
            print(f"{row['alias']}: {row['description']}\n  source: {row['source']}\n"
                  f"  install: {row['install']}")
