"""The `netspec` command line. Subcommands live in netspec/commands/ and load lazily, so
`netspec check` never imports torch or onnxruntime."""

from __future__ import annotations

import importlib
import sys

import click

from netspec import __version__
from netspec.errors import NetspecError

# name -> (module, function); each module defines one click command.
COMMANDS = {
    "check": ("netspec.commands.check", "check"),
    "layers": ("netspec.commands.check", "layers"),
    "schema": ("netspec.commands.check", "schema"),
    "train": ("netspec.commands.train", "train"),
    "eval": ("netspec.commands.train", "eval_cmd"),
    "runs": ("netspec.commands.runs", "runs"),
    "export": ("netspec.commands.export", "export"),
    "run": ("netspec.commands.run", "run"),
    "bench": ("netspec.commands.bench", "bench"),
    "explore": ("netspec.commands.explore", "explore"),
    "zoo": ("netspec.commands.zoo", "zoo"),
    "draw": ("netspec.commands.draw", "draw"),
    "serve": ("netspec.commands.serve", "serve"),
    "show": ("netspec.commands.show", "show"),
    "fmt": ("netspec.commands.fmt", "fmt"),
    "lsp": ("netspec.commands.lsp", "lsp"),
    "import": ("netspec.commands.import_", "import_cmd"),
    "weights": ("netspec.commands.weights", "weights"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name and name not in COMMANDS and not name.startswith("-"):
            from netspec.errors import did_you_mean

            hint = did_you_mean(name, COMMANDS)
            raise click.UsageError(f"no such command `{name}`" + (f"; {hint}" if hint else ""))
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netspec")
def cli() -> None:
    """netspec: write a network as a spec, check its numbers, train it, export it to ONNX."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes print as compiler errors (exit 2), never as tracebacks."""
    set_exit_code(0)
    try:
        cli.main(args=argv, prog_name="netspec", standalone_mode=False)
    except NetspecError as e:
        text = e.render(color=sys.stderr.isatty())
        if text:  # a torchrun worker whose error rank 0 reports prints nothing
            click.echo(text, err=True)
        return getattr(e, "exit_code", 2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # a file the OS refused (read-only, missing, a device): not a bug
        where = f" {e.filename}" if e.filename else ""
        click.echo(f"error: cannot use{where}: {e.strerror or e}", err=True)
        return 2
    except MemoryError:  # an input too large for this machine, read or built whole
        click.echo("error: out of memory (is an input, a data set or a batch too large?)", err=True)
        return 2
    return _exit_code


_exit_code = 0


def set_exit_code(code: int) -> None:
    """Commands that report (rather than raise) a failed check set the process's exit status."""
    global _exit_code
    _exit_code = code


if __name__ == "__main__":
    sys.exit(main())
