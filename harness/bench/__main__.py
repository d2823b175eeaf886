"""Dispatch `python -m harness.bench <subcommand> [args]` to harness.bench.<subcommand>.main(args)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from harness.bench import SUBCOMMANDS
from harness.errors import UserError, did_you_mean, exit_on_user_error


def usage() -> str:
    lines = ["usage: python -m harness.bench SUBCOMMAND [--help | args]", "", "subcommands:"]
    lines += [f"  {name:<10} {what}" for name, what in SUBCOMMANDS.items()]
    return "\n".join(lines)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    name = args[0]
    if name not in SUBCOMMANDS:
        raise UserError(
            f"unknown benchmark {name!r}{did_you_mean(name, SUBCOMMANDS)};"
            f" choose one of: {', '.join(SUBCOMMANDS)}"
        )
    try:
        module = importlib.import_module(f"harness.bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"harness.bench.{name}":
            raise UserError(f"benchmark {name!r} is not part of this installation") from None
        raise
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
