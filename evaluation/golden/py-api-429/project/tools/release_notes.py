"""Write CHANGES.md from the merged pull requests since the last tag."""
import json
import os
import sys
import urllib.error
import urllib.request

api = os.environ["API_URL"].rstrip("/")
req = urllib.request.Request(f"{api}/repos/acme/billing/pulls?state=closed&per_page=50",
                             headers={"Accept": "application/vnd.github+json"})
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        pulls = json.load(resp)
except urllib.error.HTTPError as err:
    print(f"GET {req.full_url} -> {err.code} {err.reason}", file=sys.stderr)
    for key in ("Retry-After", "X-RateLimit-Remaining"):
        if err.headers.get(key):
            print(f"{key}: {err.headers[key]}", file=sys.stderr)
    print(err.read().decode(errors="replace"), file=sys.stderr)
    sys.exit(1)
with open("CHANGES.md", "w") as out:
    out.write("# Changes\n\n")
    for pr in pulls:
        out.write(f"- {pr['title']} (#{pr['number']})\n")
print(f"wrote {len(pulls)} entries to CHANGES.md")
