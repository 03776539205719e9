#!/usr/bin/env bash
# Seed a staging deployment for trying Meta-Builder v3 (seed 004):
#   - a staging tenant with auto-fix (v3) on, and an admin user with an API token;
#   - demo data: a git workspace from the bundled example project and a stored plan with known
#     problems (a lint error healed by the step's fix command);
#   - a run of that plan, started through the API;
#   - the IDs and URLs to look at, and the SMOKE_* variables for `make smoke`.
#
# Run it on the API's host (it uses the CLI for the tenant and token, which need the database):
#   scripts/seed_staging_v3.sh [API_URL]        default: $STAGING_URL or http://127.0.0.1:5001
# Settings are the deployment's own (DATABASE_URL, META_BUILDER_HOME...); METABUILDER names the
# CLI (default: .venv/bin/metabuilder, else metabuilder on PATH); STAGING_WORKSPACES is where the
# demo workspace is made (default: $HOME/metabuilder-staging; it must be inside the API's
# META_BUILDER_WORKSPACE_ROOTS).
set -euo pipefail

url="${1:-${STAGING_URL:-http://127.0.0.1:5001}}"
url="${url%/}"
mb="${METABUILDER:-}"
if [ -z "$mb" ]; then
  if [ -x .venv/bin/metabuilder ]; then mb=.venv/bin/metabuilder; else mb=metabuilder; fi
fi
command -v "$mb" >/dev/null || { echo "seed: no metabuilder CLI at '$mb' (set METABUILDER)" >&2; exit 2; }
command -v curl >/dev/null || { echo "seed: curl is needed" >&2; exit 2; }

json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[sys.argv[1]])' "$1"; }
api() {  # api METHOD PATH [JSON]: the body on stdout; a non-2xx answer stops the script
  local out status
  out=$(mktemp)
  status=$(curl -sS -o "$out" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' ${3:+--data "$3"} "$url$2") || { rm -f "$out"; exit 3; }
  if [ "${status:0:1}" != 2 ]; then
    echo "seed: $1 $2 answered $status: $(cat "$out")" >&2; rm -f "$out"; exit 1
  fi
  cat "$out"; rm -f "$out"
}

echo "Seeding $url for Meta-Builder v3"
curl -sSf "$url/healthz" >/dev/null || { echo "seed: $url/healthz does not answer; is the API up?" >&2; exit 3; }

tenant="staging-v3-$(date -u +%Y%m%d%H%M%S)"
"$mb" tenants create "$tenant" --name "Staging v3" >/dev/null
"$mb" settings --tenant "$tenant" --set enabled=true >/dev/null
token=$("$mb" tokens create --tenant "$tenant" --user staging-admin --role admin | sed -n 2p)
[ -n "$token" ] || { echo "seed: no token was printed" >&2; exit 1; }
echo "  tenant    $tenant (auto-fix on), user staging-admin (admin)"

workspaces="${STAGING_WORKSPACES:-$HOME/metabuilder-staging}"
workspace="$workspaces/$tenant"
mkdir -p "$workspace"
cat > "$workspace/app.py" <<'PY'
def add(a, b):
    return a + b
PY
cat > "$workspace/test_app.py" <<'PY'
import unittest

from app import add


class AddTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)


if __name__ == "__main__":
    unittest.main()
PY
git -C "$workspace" init --quiet --initial-branch=main
git -C "$workspace" add --all
git -C "$workspace" -c user.name=staging -c user.email=staging@localhost -c commit.gpgsign=false \
  commit --quiet -m "staging demo project"
echo "  workspace $workspace"

plan_yaml=$(cat <<'YAML'
name: staging-known-issues
description: A lint error that the step's own fix command heals, then the tests.
write_scope: ["lint_ok.txt"]
steps:
  - name: lint
    command: >-
      test -f lint_ok.txt || { echo "app.py:1:1: F401 'os' imported but unused"; exit 1; }
    fix: echo ok > lint_ok.txt
    timeout: 1m
  - name: test
    command: python3 -m unittest -v
    timeout: 2m
YAML
)
body=$(api POST /api/meta/v3/plans "$(python3 -c 'import json,sys; print(json.dumps({"yaml": sys.argv[1]}))' "$plan_yaml")")
plan_id=$(printf '%s' "$body" | json id)
echo "  plan      $plan_id"
body=$(api POST /api/meta/v3/runs "$(python3 -c 'import json,sys; print(json.dumps({"plan_id": sys.argv[1], "workspace": sys.argv[2]}))' "$plan_id" "$workspace")")
run_id=$(printf '%s' "$body" | json run_id)
echo "  run       $run_id (started)"
body=$(api GET "/api/meta/v3/runs/$run_id")
status=$(printf '%s' "$body" | json status)
echo "  status    $status"

cat <<EOT

Staging seeded.
  Tenant ID: $tenant
  Plan ID:   $plan_id
  Run ID:    $run_id

URLs:
  Run page (portal):  $url/portal/runs/$run_id   (sign in with the token below)
  Auto-fix timeline:  $url/api/meta/v2/runs/$run_id/autofix
  Escalation info:    $url/api/meta/v2/runs/$run_id/escalation
  API docs:           $url/docs

Admin token of $tenant (shown only now):
  $token

Smoke tests against this deployment:
  export RUN_SMOKE=true SMOKE_BASE_URL=$url SMOKE_TOKEN=$token SMOKE_WORKSPACE=$workspace
  make smoke
EOT
