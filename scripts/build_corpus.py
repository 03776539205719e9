"""Build the development corpus by running real tools on small broken inputs.

Each case is a short bash script run in a fresh temporary directory; its combined stdout and
stderr are kept byte for byte as ``tests/corpus/own/<id>/fail.log`` and its label and exit code
go to ``labels.csv``. Nothing in a log is written by hand: where a case needs a server (a 503, a
429 with Retry-After, a 403) a local HTTP server answers, and where it needs a network failure
the failure is real (a closed port, a name that does not resolve here).

    python scripts/build_corpus.py [--only ID...] [--out DIR]

A case whose tool is not installed is skipped and listed; a case that does not fail is an error.
Tools: ruff flake8 black isort pylint mypy bandit detect-secrets pip-audit django alembic
(PyPI, in TOOLS_VENV), eslint prettier typescript jest (npm, in NPM_TOOLS), shellcheck go
gitleaks (Debian), and what the machine has (git, curl, gcc, javac, cargo, node, psql, docker).
"""

from __future__ import annotations

import argparse
import csv
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parent.parent
TOOLS_VENV = Path(os.environ.get("TOOLS_VENV", "/tmp/tools"))
NPM_TOOLS = Path(os.environ.get("NPM_TOOLS", "/tmp/npmtools"))


@dataclass(frozen=True)
class Case:
    id: str
    label: str
    script: str
    needs: tuple[str, ...] = ()
    alt: str = ""


def py(name: str, text: str) -> str:
    """A heredoc writing ``text`` to ``name``."""
    return f"cat > {name} <<'PYEOF'\n{text}\nPYEOF\n"


PYTEST_ASSERT = py("test_calc.py", """\
def add(a, b):
    return a - b

def test_add():
    assert add(2, 3) == 5

def test_ok():
    assert add(2, 0) == 2
""")

CASES: list[Case] = [
    # --- TEST_ASSERT
    Case("pytest-assert", "TEST_ASSERT", PYTEST_ASSERT + "pytest -q test_calc.py", ("pytest",)),
    Case("pytest-assert-verbose", "TEST_ASSERT", PYTEST_ASSERT + "pytest -v --color=yes test_calc.py", ("pytest",)),
    Case("pytest-unittest-style", "TEST_ASSERT", py("test_u.py", """\
import unittest
class T(unittest.TestCase):
    def test_dict(self):
        self.assertEqual({"a": 1, "b": 2}, {"a": 1, "b": 3})
""") + "pytest test_u.py", ("pytest",)),
    Case("unittest-fail", "TEST_ASSERT", py("test_u.py", """\
import unittest
class T(unittest.TestCase):
    def test_list(self):
        self.assertListEqual([1, 2, 3], [1, 2, 4])
    def test_true(self):
        self.assertTrue(1 > 2, "one is not greater than two")
""") + "python -m unittest -v test_u", ()),
    Case("node-test-assert", "TEST_ASSERT", py("calc.test.mjs", """\
import test from 'node:test';
import assert from 'node:assert/strict';
test('adds', () => { assert.equal(1 + 1, 3); });
""") + "node --test calc.test.mjs", ("node",)),
    Case("jest-fail", "TEST_ASSERT", py("sum.test.js", """\
const sum = (a, b) => a * b;
test('adds 1 + 2 to equal 3', () => { expect(sum(1, 2)).toBe(3); });
test('objects', () => { expect({a: 1, b: [1, 2]}).toEqual({a: 1, b: [1, 3]}); });
""") + "echo {} > package.json && jest --ci sum.test.js", ("jest",)),
    Case("go-test-fail", "TEST_ASSERT", py("go.mod", "module example.com/calc\n\ngo 1.19") + py("calc.go", """\
package calc

func Add(a, b int) int { return a - b }
""") + py("calc_test.go", """\
package calc

import "testing"

func TestAdd(t *testing.T) {
	if got := Add(2, 3); got != 5 {
		t.Errorf("Add(2, 3) = %d, want 5", got)
	}
}
""") + "GOFLAGS=-mod=mod GOCACHE=$PWD/.cache go test ./...", ("go",)),
    Case("cargo-test-fail", "TEST_ASSERT", "cargo new --quiet --lib calc && cd calc && " + py("src/lib.rs", """\
pub fn add(a: i32, b: i32) -> i32 { a - b }

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn adds() { assert_eq!(add(2, 3), 5); }
}
""") + "cargo test --offline --quiet 2>&1", ("cargo",)),
    Case("pytest-after-pip-retry", "TEST_ASSERT", PYTEST_ASSERT
         + "pip install --retries 1 --timeout 1 --index-url http://127.0.0.1:9/simple requests-mock || true\n"
         + "pytest -q test_calc.py", ("pytest", "pip")),

    # --- TRANSIENT (and tests that fail only because a service did)
    Case("pytest-503-service", "TRANSIENT", py("test_api.py", """\
import os, urllib.request

def fetch(path):
    with urllib.request.urlopen(os.environ["HTTP"] + path, timeout=5) as r:
        return r.read()

def test_inventory():
    assert fetch("/status/503") == b"ok"
""") + "pytest -q test_api.py", ("pytest",), alt="TEST_ASSERT"),
    Case("curl-connection-refused", "TRANSIENT", "curl -sS --fail http://127.0.0.1:9/health", ("curl",)),
    Case("curl-dns", "TRANSIENT", "curl -sS --fail https://artifacts.build-cache.invalid/pkg.tar.gz", ("curl",)),
    Case("curl-503", "TRANSIENT", 'curl -sS --fail "$HTTP/status/503"', ("curl",)),
    Case("curl-502-verbose", "TRANSIENT", 'curl -sS -i --fail-with-body "$HTTP/status/502"', ("curl",)),
    Case("git-clone-refused", "TRANSIENT", "git clone http://127.0.0.1:9/org/repo.git", ("git",)),
    Case("python-urllib-refused", "TRANSIENT", "python -c \"import urllib.request; "
         "urllib.request.urlopen('http://127.0.0.1:9/api', timeout=3)\"", ()),
    Case("pip-install-offline", "TRANSIENT", "pip install --retries 2 --timeout 1 "
         "--index-url http://127.0.0.1:9/simple left-pad-py", ("pip",), alt="INFRA"),
    Case("python-socket-timeout", "TRANSIENT", py("slow.py", """\
import os, urllib.request
urllib.request.urlopen(os.environ["HTTP"] + "/sleep/3", timeout=0.5)
""") + "python slow.py", ()),

    # --- RATE_LIMIT
    Case("curl-429-retry-after", "RATE_LIMIT", 'curl -sS -i --fail-with-body "$HTTP/status/429?retry_after=30"',
         ("curl",)),
    Case("python-urllib-429", "RATE_LIMIT", "python -c \"import os, urllib.request; "
         "urllib.request.urlopen(os.environ['HTTP'] + '/status/429?retry_after=120')\"", ()),

    # --- POLICY
    Case("git-pre-receive-declined", "POLICY", """\
git init -q --bare server.git
printf '#!/bin/sh\\necho "refusing push: main is protected, open a merge request"\\nexit 1\\n' > server.git/hooks/pre-receive
chmod +x server.git/hooks/pre-receive
git init -q -b main work && cd work && git -c user.email=ci@example.com -c user.name=ci commit -q --allow-empty -m x
git push ../server.git main
""", ("git",)),
    Case("curl-403", "POLICY", 'curl -sS --fail "$HTTP/status/403"', ("curl",)),
    Case("git-push-non-fast-forward", "POLICY", """\
git init -q --bare server.git
git clone -q server.git a 2>/dev/null && git clone -q server.git b 2>/dev/null
(cd a && git -c user.email=a@x -c user.name=a commit -q --allow-empty -m a && git push -q origin HEAD:main)
cd b && git -c user.email=b@x -c user.name=b commit -q --allow-empty -m b && git push origin HEAD:main
""", ("git",), alt="TRANSIENT"),

    # --- LINT
    Case("ruff-check", "LINT", py("app.py", "import os, sys\n\ndef f( x ):\n    y = 1\n    return x") +
         "ruff check --no-cache app.py", ("ruff",)),
    Case("ruff-format-check", "LINT", py("app.py", "def f( x ):\n  return {'a':x}") + "ruff format --check app.py",
         ("ruff",)),
    Case("flake8", "LINT", py("app.py", "import os\ndef f( x ):\n    return x  \n") + "flake8 app.py", ("flake8",)),
    Case("black-check", "LINT", py("app.py", "def f( x ):\n  return {'a':x}") + "black --check --diff app.py",
         ("black",)),
    Case("isort-check", "LINT", py("app.py", "import sys\nimport os\n") + "isort --check-only --diff app.py",
         ("isort",)),
    Case("pylint", "LINT", py("app.py", "import os\ndef f(x):\n    y = 1\n    return x\n") + "pylint app.py",
         ("pylint",)),
    Case("eslint", "LINT", py("eslint.config.js", "module.exports = [{rules: {'no-unused-vars': 'error', "
                                                  "'no-undef': 'error', semi: ['error', 'always']}}];")
         + py("app.js", "const unused = 1\nfunction f() { return undefinedThing }\n") + "eslint app.js",
         ("eslint",)),
    Case("prettier-check", "LINT", py("app.js", "const x = {a:1,\nb:2}") + "prettier --check app.js",
         ("prettier",)),
    Case("shellcheck", "LINT", py("deploy.sh", "#!/bin/bash\nfor f in $(ls *.txt); do\n  cat $f\ndone\n")
         + "shellcheck deploy.sh", ("shellcheck",)),
    Case("gofmt-check", "LINT", py("main.go", "package main\nfunc main(){\nprintln( \"x\" )\n}")
         + 'out=$(gofmt -l .); if [ -n "$out" ]; then echo "These files are not gofmt-formatted:"; '
           'echo "$out"; gofmt -d .; exit 1; fi', ("gofmt",)),
    Case("go-vet", "LINT", py("go.mod", "module example.com/v\n\ngo 1.19") + py("main.go", """\
package main

import "fmt"

func main() {
	fmt.Printf("%d\\n", "text")
}
""") + "GOCACHE=$PWD/.cache go vet ./...", ("go",), alt="TYPECHECK"),

    # --- TYPECHECK
    Case("mypy", "TYPECHECK", py("app.py", "def f(x: int) -> str:\n    return x\n\ny: int = f(1)\n")
         + "mypy --no-incremental app.py", ("mypy",)),
    Case("tsc", "TYPECHECK", py("app.ts", "let n: number = 'one';\nfunction f(a: string) { return a.lenght; }\n")
         + "tsc --noEmit app.ts", ("tsc",)),
    Case("javac", "TYPECHECK", py("App.java", """\
public class App {
    public static void main(String[] args) {
        int n = "one";
        System.out.println(missing(n));
    }
}
""") + "javac App.java", ("javac",)),
    Case("go-build", "TYPECHECK", py("go.mod", "module example.com/b\n\ngo 1.19") + py("main.go", """\
package main

func main() {
	var n int = "one"
	undefinedCall(n)
}
""") + "GOCACHE=$PWD/.cache go build ./...", ("go",)),
    Case("cargo-build", "TYPECHECK", "cargo new --quiet app && cd app && " + py("src/main.rs", """\
fn main() {
    let n: i32 = "one";
    println!("{}", n);
}
""") + "cargo build --offline --quiet 2>&1", ("cargo",)),
    Case("gcc-compile", "TYPECHECK", py("main.c", "int main(void) { int n = undeclared + 1; return n; }")
         + "gcc -c main.c", ("gcc",)),
    Case("python-syntax-error", "TYPECHECK", py("app.py", "def f(:\n    return 1\n") + "python -m py_compile app.py",
         ()),

    # --- SECURITY
    Case("bandit", "SECURITY", py("app.py", """\
import subprocess
def run(cmd):
    return subprocess.call(cmd, shell=True)
password = "hunter2"
""") + "bandit -q app.py", ("bandit",)),
    Case("detect-secrets-hook", "SECURITY", py("settings.py", 'AWS_SECRET_ACCESS_KEY = '
                                              '"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\n')
         + "git init -q . && git add settings.py && detect-secrets-hook settings.py", ("detect-secrets-hook", "git")),
    Case("gitleaks", "SECURITY", py("config.env", "GITHUB_TOKEN=ghp_1234567890abcdefghijklmnopqrstuvwxyzAB\n")
         + "git init -q . && git add . && git -c user.email=a@x -c user.name=a commit -qm c && "
           "gitleaks detect --source . --no-banner", ("gitleaks", "git")),

    # --- SCHEMA_MIGRATION
    Case("alembic-multiple-heads", "SCHEMA_MIGRATION", """\
alembic init migrations >/dev/null
sed -i 's#^sqlalchemy.url = .*#sqlalchemy.url = sqlite:///app.db#' alembic.ini
alembic revision -m base --rev-id aaa1 >/dev/null
alembic revision -m one --rev-id bbb2 --head aaa1 >/dev/null
alembic revision -m two --rev-id ccc3 --head aaa1 --splice >/dev/null
alembic upgrade head
""", ("alembic",)),
    Case("alembic-unknown-revision", "SCHEMA_MIGRATION", """\
alembic init migrations >/dev/null
sed -i 's#^sqlalchemy.url = .*#sqlalchemy.url = sqlite:///app.db#' alembic.ini
alembic revision -m base --rev-id aaa1 >/dev/null
alembic upgrade head >/dev/null 2>&1
sqlite3 app.db "update alembic_version set version_num='ffff9999'" 2>/dev/null || \
  python -c "import sqlite3; c=sqlite3.connect('app.db'); c.execute(\\"update alembic_version set version_num='ffff9999'\\"); c.commit()"
alembic upgrade head
""", ("alembic",)),
    Case("sqlalchemy-no-such-table", "SCHEMA_MIGRATION", py("app.py", """\
import sqlalchemy as sa
engine = sa.create_engine("sqlite:///app.db")
with engine.connect() as c:
    c.execute(sa.text("select id, email from users")).all()
""") + "python app.py", ("alembic",)),
    Case("psql-missing-relation", "SCHEMA_MIGRATION", py("0002_add_index.sql",
                                                         "CREATE INDEX orders_customer ON orders (customer_id);")
         + "psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -f 0002_add_index.sql", ("psql",)),
    Case("psql-duplicate-column", "SCHEMA_MIGRATION", py("m.sql", """\
BEGIN;
CREATE TEMP TABLE accounts (id int primary key, email text);
ALTER TABLE accounts ADD COLUMN email text;
COMMIT;
""") + "psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -f m.sql", ("psql",)),
    Case("django-makemigrations-check", "SCHEMA_MIGRATION", """\
django-admin startproject site_ . >/dev/null && python manage.py startapp shop
cat >> site_/settings.py <<'EOF'
INSTALLED_APPS += ["shop"]
EOF
python manage.py makemigrations shop >/dev/null
cat >> shop/models.py <<'EOF'
class Order(models.Model):
    total = models.IntegerField()
EOF
python manage.py makemigrations --check --dry-run
""", ("django-admin",)),
    Case("django-conflicting-migrations", "SCHEMA_MIGRATION", """\
django-admin startproject site_ . >/dev/null && python manage.py startapp shop
cat >> site_/settings.py <<'EOF'
INSTALLED_APPS += ["shop"]
EOF
printf 'from django.db import models\\nclass Order(models.Model):\\n    total = models.IntegerField()\\n' > shop/models.py
python manage.py makemigrations shop >/dev/null
cp shop/migrations/0001_initial.py shop/migrations/0002_a.py
cp shop/migrations/0001_initial.py shop/migrations/0002_b.py
sed -i 's/initial = True/initial = False/; s/dependencies = \\[\\]/dependencies = [("shop", "0001_initial")]/' \
  shop/migrations/0002_a.py shop/migrations/0002_b.py
python manage.py migrate
""", ("django-admin",)),

    # --- INFRA
    Case("disk-full-dd", "INFRA", "dd if=/dev/zero of=/dev/full bs=1M count=1", ()),
    Case("disk-full-python", "INFRA", "python -c \"open('/dev/full', 'w').write('x' * 10000)\"", ()),
    Case("command-not-found", "INFRA", "echo 'building docs'\nsphinx-build-nonexistent -b html docs out", ()),
    Case("python-memoryerror", "INFRA", "ulimit -v 400000; python -c \"b = bytearray(2 * 1024 ** 3)\"", ()),
    Case("docker-no-daemon", "INFRA", "docker run --rm alpine:3.19 true", ("docker",)),
    Case("git-not-a-repo", "INFRA", "git describe --tags", ("git",)),
    Case("java-missing-main-class", "INFRA", "java -cp . com.example.NoSuchMain", ("java",), alt="RUNTIME"),

    # --- RUNTIME
    Case("python-keyerror", "RUNTIME", py("job.py", """\
import json
config = json.loads('{"name": "x"}')
def main():
    print("starting job", config["name"])
    return config["retries"] + 1
main()
""") + "python job.py", ()),
    Case("python-module-not-found", "RUNTIME", "python -c 'import yaml_but_missing'", ()),
    Case("python-segfault", "RUNTIME", "python -c 'import ctypes; ctypes.string_at(0)'", ()),
    Case("node-typeerror", "RUNTIME", py("app.js", "const user = undefined;\nconsole.log(user.name);\n")
         + "node app.js", ("node",)),
    Case("java-npe", "RUNTIME", py("App.java", """\
public class App {
    public static void main(String[] args) {
        String s = args.length > 5 ? "x" : null;
        System.out.println(s.length());
    }
}
""") + "javac App.java && java App", ("javac",)),
    Case("go-panic", "RUNTIME", py("go.mod", "module example.com/p\n\ngo 1.19") + py("main.go", """\
package main

func main() {
	var m map[string]int
	m["x"] = 1
}
""") + "GOCACHE=$PWD/.cache go run .", ("go",)),
    Case("rust-panic", "RUNTIME", "cargo new --quiet app && cd app && " + py("src/main.rs", """\
fn main() {
    let v: Vec<i32> = Vec::new();
    let first: Option<&i32> = v.first();
    println!("{}", first.unwrap());
}
""") + "cargo run --offline --quiet 2>&1", ("cargo",)),
    Case("c-segfault", "RUNTIME", py("main.c", "int main(void) { int *p = 0; return *p; }")
         + "gcc -O0 -o main main.c && ./main", ("gcc",)),
]


class _Handler(http.server.BaseHTTPRequestHandler):
    """A local service that answers with the status the path asks for (/status/503...)."""

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if parts[0] == "sleep":
            import time

            time.sleep(float(parts[1]))
        code = int(parts[1]) if parts[0] == "status" else 200
        body = {403: b"forbidden: token lacks the packages:write scope\n", 429: b"rate limit exceeded\n",
                502: b"<html><body><h1>502 Bad Gateway</h1></body></html>\n",
                503: b"upstream connect error or disconnect/reset before headers\n"}.get(code, b"ok\n")
        self.send_response(code)
        if code == 429:
            self.send_header("Retry-After", parse_qs(url.query).get("retry_after", ["60"])[0])
            self.send_header("X-RateLimit-Remaining", "0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:  # the client gave up waiting (the timeout case)
            pass

    def log_message(self, *args: object) -> None:
        pass


def _path() -> str:
    extra = [TOOLS_VENV / "bin", NPM_TOOLS / "node_modules" / ".bin", Path("/usr/lib/go/bin")]
    return os.pathsep.join([str(p) for p in extra if p.is_dir()] + [os.environ.get("PATH", "")])


def run_case(case: Case, out_dir: Path, env: dict[str, str]) -> int:
    with tempfile.TemporaryDirectory(prefix="mb-corpus-") as work:
        proc = subprocess.run(["bash", "-c", case.script], cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=300)
    if proc.returncode == 0:
        raise SystemExit(f"case {case.id}: the command succeeded; a failure case must fail")
    (out_dir / case.id).mkdir(parents=True, exist_ok=True)
    (out_dir / case.id / "fail.log").write_bytes(proc.stdout)
    # A process killed by signal N reports -N here; a shell (and a step) reports 128 + N.
    return proc.returncode if proc.returncode > 0 else 128 - proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "corpus" / "own")
    parser.add_argument("--only", nargs="*", help="case ids to (re)build; others keep their logs")
    args = parser.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ, PATH=_path(), HTTP=f"http://127.0.0.1:{server.server_address[1]}",
               NO_COLOR="1", PIP_DISABLE_PIP_VERSION_CHECK="1", GOFLAGS="-mod=mod", GOPROXY="off",
               GOTOOLCHAIN="local", CARGO_TERM_COLOR="never")
    env.pop("VIRTUAL_ENV", None)

    labels_path = args.out / "labels.csv"
    rows: dict[str, dict[str, str]] = {}
    if labels_path.exists():
        with labels_path.open(newline="") as fh:
            rows = {r["id"]: r for r in csv.DictReader(fh)}
    skipped = []
    for case in CASES:
        if args.only and case.id not in args.only:
            continue
        missing = [tool for tool in case.needs if shutil.which(tool, path=env["PATH"]) is None]
        if missing:
            skipped.append(f"{case.id} (needs {', '.join(missing)})")
            continue
        code = run_case(case, args.out, env)
        tool = case.needs[0] if case.needs else "python/bash"
        rows[case.id] = {"id": case.id, "class": case.label, "alt_class": case.alt, "exit_code": str(code),
                         "source": f"real {tool} output, built by scripts/build_corpus.py"}
        print(f"{case.id:<32} exit {code:<4} {case.label}")
    server.shutdown()
    args.out.mkdir(parents=True, exist_ok=True)
    with labels_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "class", "alt_class", "exit_code", "source"])
        writer.writeheader()
        writer.writerows(rows[k] for k in sorted(rows))
    if skipped:
        print("skipped (tool not installed):\n  " + "\n  ".join(skipped), file=sys.stderr)


if __name__ == "__main__":
    main()
