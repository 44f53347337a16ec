"""The ``sftlab`` command line.

Each command lives in its own module under ``sftlab.commands`` and exposes
``register(app)``. Modules import heavy libraries (torch, transformers) inside
their command functions only, so ``sftlab --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys

import typer

from sftlab.errors import UserError, from_environment

app = typer.Typer(
    name="sftlab",
    help="Run whole supervised fine-tuning studies: plan, prepare, train, evaluate, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Run whole supervised fine-tuning studies: plan, prepare, train, evaluate, report."""


_registered = False


def _register_commands() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    import sftlab.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        try:
            module = importlib.import_module(f"sftlab.commands.{info.name}")
        except ImportError as err:  # an optional extra missing: the other commands still work
            logging.getLogger("sftlab.cli").warning("command module %s unavailable: %s",
                                                    info.name, err)
            continue
        module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    logging.basicConfig(
        level=os.environ.get("SFTLAB_LOG_LEVEL", "WARNING"),
        format="%(levelname)s %(name)s: %(message)s",
    )
    _register_commands()
    try:
        code = app(args=argv, standalone_mode=False)
    except UserError as err:
        print(f"error: {err.render()}", file=sys.stderr)
        return err.exit_code
    except (typer.Exit, SystemExit) as stop:
        code = getattr(stop, "exit_code", None)
        if code is None:
            code = stop.code if isinstance(stop, SystemExit) else 0
        return int(code or 0)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if hasattr(err, "show") and isinstance(getattr(err, "exit_code", None), int):
            err.show()  # click usage errors (typer vendors click) carry their exit code
            return err.exit_code
        user = from_environment(err)  # the one boundary: a damaged or unreadable file ...
        if user is None:
            raise
        print(f"error: {user.render()}", file=sys.stderr)
        return user.exit_code
    return code if isinstance(code, int) else 0  # click returns typer.Exit's code here


if __name__ == "__main__":
    sys.exit(main())
