"""Report imports a module never uses (flake8's F401, without flake8 on the build image)."""
import ast
import sys
from pathlib import Path

problems = 0
for path in sorted(Path("src").rglob("*.py")):
    tree = ast.parse(path.read_text(), str(path))
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {n.value.id for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = (alias.asname or alias.name).split(".")[0]
                if name not in used:
                    print(f"{path}:{node.lineno}:1: F401 '{alias.name}' imported but unused")
                    problems += 1
sys.exit(1 if problems else 0)
