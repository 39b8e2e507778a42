"""The ``focus`` command line (filled in by the flows issue)."""


def main() -> None:  # pragma: no cover - placeholder until the flows land
    raise SystemExit("focus: no commands yet")
