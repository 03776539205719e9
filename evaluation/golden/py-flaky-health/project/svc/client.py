import json
import os
import urllib.request


def health():
    with urllib.request.urlopen(os.environ["STATUS_URL"] + "/health", timeout=5) as resp:
        return json.load(resp)
