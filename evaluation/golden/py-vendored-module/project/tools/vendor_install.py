"""Install a package from the repository's vendor/ folder (the build network has no PyPI)."""
import shutil
import sys
from pathlib import Path

name = sys.argv[1]
source = Path("vendor") / name
if not source.is_dir():
    sys.exit(f"vendor/{name} not found")
target = Path("site") / name
shutil.rmtree(target, ignore_errors=True)
shutil.copytree(source, target)
print(f"installed {name} into site/")
