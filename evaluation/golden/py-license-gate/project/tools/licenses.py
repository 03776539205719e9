import json
import sys

ALLOWED = {"MIT", "BSD-3-Clause", "Apache-2.0", "ISC"}
bad = 0
for name, info in json.load(open("third_party/licenses.json")).items():
    if info["license"] not in ALLOWED:
        print(f"fail-on license {info['license']} was found for package {name}:{info['version']}")
        bad += 1
sys.exit(1 if bad else 0)
