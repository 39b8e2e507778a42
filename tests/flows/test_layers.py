"""flows/ is glue: all SQL lives in db/, behind named functions (docs/architecture.md).

Read from the source with :mod:`ast`, so an import inside a function counts as much as one at
the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

FLOWS = Path(__file__).resolve().parents[2] / "flows"


def _sql_uses(path: Path) -> list[str]:
    """``line: what`` for each sqlalchemy import and each use of the ORM models (``db.models``) in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "db":
            names = [f"db.{node.attr}"]
        for name in names:
            if name.split(".")[0] == "sqlalchemy" or name == "db.models" or name.startswith("db.models."):
                found.append(f"{node.lineno}: {name}")
    return found


def test_flows_import_no_sqlalchemy() -> None:
    """No module of flows/ imports sqlalchemy or builds queries on db.models (record and report used to)."""
    files = sorted(FLOWS.rglob("*.py"))
    assert len(files) > 20  # the package is there, not an empty glob
    uses = {str(path.relative_to(FLOWS.parent)): found for path in files if (found := _sql_uses(path))}
    assert uses == {}


def test_the_check_sees_every_form(tmp_path: Path) -> None:
    """The checker itself: each way a module could reach SQL is found (so an empty result means something)."""
    source = (
        "import sqlalchemy\nfrom sqlalchemy.engine import Engine\nimport sqlalchemy.orm as orm\n"
        "from db.models import Mosaic\nimport db\ndef f():\n    from sqlalchemy import select\n"
        "    return db.models.Image\nimport db.engine\nfrom db import Engine\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source, encoding="utf-8")
    found = _sql_uses(path)
    assert sorted(int(f.split(":")[0]) for f in found) == [1, 2, 2, 3, 4, 4, 7, 7, 8]
