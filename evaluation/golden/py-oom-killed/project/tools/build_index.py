"""Build the search index of the docs folder (docs/*.md -> .cache/index.json)."""
import json
import re
from collections import defaultdict
from pathlib import Path

index = defaultdict(list)
for page in sorted(Path("docs").glob("*.md")):
    for word in set(re.findall(r"[a-z]{3,}", page.read_text().lower())):
        index[word].append(page.name)
Path(".cache").mkdir(exist_ok=True)
Path(".cache/index.json").write_text(json.dumps(index, sort_keys=True))
print(f"indexed {len(index)} words")
