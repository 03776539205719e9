"""Build the offline installer bundle."""
import sys
import tarfile
from pathlib import Path

manifest = [l.strip() for l in Path("MANIFEST").read_text().splitlines() if l.strip()]
missing = [m for m in manifest if not Path(m).exists()]
if missing:
    print(f"bundle: {len(missing)} of {len(manifest)} entries unavailable; see bundle.log")
    Path("bundle.log").write_text("\n".join(missing) + "\n")
    sys.exit(3)
with tarfile.open("bundle.tar.gz", "w:gz") as tar:
    for m in manifest:
        tar.add(m)
