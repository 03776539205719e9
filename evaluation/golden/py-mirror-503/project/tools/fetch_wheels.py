"""Resolve the pinned packages against the internal mirror and cache their index pages."""
import os
import sys
import urllib.request
from pathlib import Path

index = os.environ["PIP_INDEX_URL"].rstrip("/")
cache = Path(".cache/index")
cache.mkdir(parents=True, exist_ok=True)
print(f"Looking in indexes: {index}")
for line in Path(sys.argv[1]).read_text().splitlines():
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    print(f"Collecting {name}=={version}", flush=True)
    with urllib.request.urlopen(f"{index}/{name}/", timeout=10) as resp:
        (cache / f"{name}.html").write_bytes(resp.read())
print("all pinned packages resolved")
