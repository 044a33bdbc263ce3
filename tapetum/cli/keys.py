"""``tapetum keys``: create, list and revoke API keys for the serving API.

The key database defaults to ``$TAPETUM_KEYS_DB``, else ``./tapetum-keys.sqlite``. The
serving dependencies are imported inside the commands so that
``tapetum --help`` stays fast.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tapetum._optional import import_optional
from tapetum.errors import KeyDatabaseNotFoundError, UnknownKeyError

if TYPE_CHECKING:
    from tapetum.serve.auth import KeyStore

keys_app = typer.Typer(
    name="keys",
    help="Manage API keys of the serving API (stored as peppered HMAC-SHA256 in SQLite).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_DB = Path("tapetum-keys.sqlite")

DbOption = Annotated[
    Path,
    typer.Option(
        "--db",
        envvar="TAPETUM_KEYS_DB",
        help="API key database (SQLite file; created if missing).",
    ),
]


def _open_store(db: Path, *, must_exist: bool = True) -> KeyStore:
    if must_exist and not db.is_file():
        raise KeyDatabaseNotFoundError(
            f"no API key database at {db}: create a key first, or point --db / "
            "TAPETUM_KEYS_DB at the right file"
        )
    import_optional("argon2", extra="serve", purpose="API keys")
    from tapetum.serve.auth import KeyStore

    return KeyStore(db)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    scopes: Annotated[
        str,
        typer.Option("--scopes", help="Comma-separated scopes: read, infer, admin."),
    ] = "infer,read",
    db: DbOption = DEFAULT_DB,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    import_optional("argon2", extra="serve", purpose="API keys")
    from tapetum.serve.auth import parse_scopes

    parsed = parse_scopes(s for s in scopes.split(",") if s.strip())  # before touching --db
    with _open_store(db, must_exist=False) as store:
        record, raw = store.create(name, parsed)
    err = Console(stderr=True)
    scope_names = ",".join(sorted(s.value for s in record.scopes))
    err.print(
        f"created key [bold]{record.key_id}[/] ({escape(record.name)}; scopes {scope_names}). "
        "Store it now: it cannot be shown again.",
        highlight=False,
    )
    # The raw key alone on stdout, so `KEY=$(tapetum keys create ...)` works.
    typer.echo(raw)


@keys_app.command("list")
def list_keys(db: DbOption = DEFAULT_DB) -> None:
    """List keys (id, name, scopes, creation time, status); never their secrets."""
    with _open_store(db) as store:
        keys = store.list()
    table = Table(title=f"API keys in {escape(str(db))}")
    table.add_column("key id", no_wrap=True)
    table.add_column("name")
    table.add_column("scopes", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for key in keys:
        created = dt.datetime.fromtimestamp(key.created_at, tz=dt.UTC)
        table.add_row(
            key.key_id,
            escape(key.name),
            ",".join(sorted(s.value for s in key.scopes)),
            created.strftime("%Y-%m-%d %H:%M:%S"),
            "[red]revoked[/]" if key.revoked else "[green]active[/]",
        )
    Console().print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="Id of the key (see `tapetum keys list`).")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Revoke a key; every server sharing the database refuses it within about a second,
    and ends its open streaming calls."""
    with _open_store(db) as store:
        if not store.revoke(key_id):
            existing = store.get(key_id)
            state = "already revoked" if existing is not None else "unknown"
            raise UnknownKeyError(
                f"no active API key with id {key_id!r} ({state}) in {db}: see `tapetum keys list`"
            )
    Console(stderr=True).print(f"revoked key [bold]{escape(key_id)}[/]", highlight=False)
