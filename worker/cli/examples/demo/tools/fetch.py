"""Fetch a URL like a dependency download would; print the HTTP status and headers on failure."""

import sys
import urllib.error
import urllib.request

url = sys.argv[1]
try:
    with urllib.request.urlopen(url, timeout=10) as resp:
        print(f"GET {url}: {resp.status} {resp.reason}, {len(resp.read())} bytes")
except urllib.error.HTTPError as err:
    print(f"GET {url}")
    print(f"HTTP/1.1 {err.code} {err.reason}")
    for name, value in err.headers.items():
        print(f"{name}: {value}")
    sys.exit(1)
