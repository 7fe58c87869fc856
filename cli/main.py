"""`tornstore`: the command group. Each command lives in its own module and is registered here."""
from __future__ import annotations

import importlib

import click


class _LazyGroup(click.Group):
    """A group whose commands' modules are imported when needed (see COMMANDS): click asks `get_command`
    for the command it runs and `list_commands` for help and completion."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(module).register(self)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


# Each command and the module that defines it (its `register(group)` adds the module's commands). A module
# is imported when one of its commands runs, or for --help and completion: `tornstore ingest` does not
# load the query, plot, collector or demo code and what they import.
COMMANDS = {
    "init": "tornstore.cli.log_commands",
    "migrate": "tornstore.cli.log_commands",
    "ingest": "tornstore.cli.log_commands",
    "export-events": "tornstore.cli.log_commands",
    "replay": "tornstore.cli.ops_commands",
    "status": "tornstore.cli.ops_commands",
    "verify": "tornstore.cli.ops_commands",
    "player": "tornstore.cli.query_commands",
    "faction": "tornstore.cli.query_commands",
    "war": "tornstore.cli.query_commands",
    "territory": "tornstore.cli.query_commands",
    "history": "tornstore.cli.query_commands",
    "changes": "tornstore.cli.query_commands",
    "stats": "tornstore.cli.query_commands",
    "leaderboard": "tornstore.cli.query_commands",
    "plot": "tornstore.cli.plot_commands",
    "export": "tornstore.cli.export_commands",
    "compact": "tornstore.cli.compact_commands",
    "backup": "tornstore.cli.compact_commands",
    "copy": "tornstore.cli.copy_command",
    "collect": "tornstore.cli.collect_commands",
    "simulate-api": "tornstore.cli.collect_commands",
    "demo": "tornstore.cli.demo_command",
    "quarantine": "tornstore.cli.quarantine_commands",
}
COMMAND_MODULES = list(dict.fromkeys(COMMANDS.values()))


def main() -> None:
    cli(prog_name="tornstore")


if __name__ == "__main__":
    main()
