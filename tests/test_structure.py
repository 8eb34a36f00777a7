"""The import graph of backend/ (scripts/check_structure.py): clean today, and the check fails on a circle or an
import that goes up."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_structure", ROOT / "scripts" / "check_structure.py")
check_structure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_structure)


def test_backend_has_no_circle_and_imports_only_down():
    assert check_structure.check() == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "backend"
    for name, text in {"__init__.py": "", "core/__init__.py": "", "model/__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_an_import_from_a_higher_package_fails(tmp_path):
    root = _tree(tmp_path, {"core/a.py": "def f():\n    from ..model import b\n", "model/b.py": ""})
    problems = check_structure.check(root)
    assert len(problems) == 1 and "core imports backend.model.b" in problems[0], problems


def test_a_circle_fails(tmp_path):
    root = _tree(tmp_path, {"model/a.py": "from .b import x\n", "model/b.py": "from backend.model import a\nx = 1\n"})
    problems = check_structure.check(root)
    assert problems == ["import circle: backend.model.a → backend.model.b → backend.model.a"], problems


def test_a_package_of_no_level_fails(tmp_path):
    root = _tree(tmp_path, {"extra/__init__.py": "", "extra/x.py": ""})
    assert any("'extra' is not in LEVELS" in p for p in check_structure.check(root))
