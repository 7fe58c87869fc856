"""`tornstore`: the command group. Each command lives in its own module and is registered here."""
from __future__ import annotations

import importlib

import click



@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", envvar="TORNSTORE_DB", metavar="PATH",
              help="SQLite database file (or set TORNSTORE_DB); may also follow the command, where it wins.")
@click.version_option(package_name="tornstore")
@click.pass_context
def cli(ctx: click.Context, db: str | None) -> None:
    """Keep the history of Torn City API data in one SQLite file.

    \b
    Examples:
      tornstore demo                                  # see it all work, no API key needed
      tornstore --db torn.db init
      tornstore --db torn.db ingest capture.ndjson
      tornstore --db torn.db status
      tornstore status --db torn.db                   # --db may follow the command too
    """
    ctx.ensure_object(dict)
    ctx.obj["db"] = db


# Command modules, each defining click commands registered on `cli` through `register(cli)`.
COMMAND_MODULES = [
    "tornstore.cli.log_commands",
    "tornstore.cli.ops_commands",
    "tornstore.cli.query_commands",
    "tornstore.cli.plot_commands",
    "tornstore.cli.export_commands",
    "tornstore.cli.compact_commands",
    "tornstore.cli.collect_commands",
    "tornstore.cli.demo_command",
    "tornstore.cli.quarantine_commands",
]


def _register() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(cli)


_register()


def main() -> None:
    cli(prog_name="tornstore")


if __name__ == "__main__":
    main()
