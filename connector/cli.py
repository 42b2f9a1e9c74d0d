"""Command line: the only place exceptions become exit codes and one-line messages."""


def main(argv: list[str] | None = None) -> int:
    raise SystemExit("not built yet")
