"""Build the development corpus by running real tools on small broken inputs.

Each case is a short bash script run in a fresh temporary directory; its combined stdout and
stderr are kept byte for byte as ``tests/corpus/own/<id>/fail.log`` and its label and exit code
go to ``labels.csv``. Nothing in a log is written by hand: where a case needs a server (a 503, a
429 with Retry-After, a 403) a local HTTP server answers, and where it needs a network failure
the failure is real (a closed port, a name that does not resolve here).

    python scripts/build_corpus.py [--only ID...] [--out DIR]

A case whose tool is not installed is skipped and listed; a case that does not fail is an error.
Tools: from PyPI in TOOLS_VENV (ruff flake8 black isort pylint mypy bandit detect-secrets django
alembic pytest sqlalchemy pycodestyle pydocstyle pyflakes codespell yamllint vulture sqlfluff doc8
rstcheck mdformat docformatter pip-licenses liccheck reuse nose2 behave yoyo-migrations pyupgrade
autopep8 cpplint cmakelint interrogate pylama xenon), from npm in NPM_TOOLS (eslint@8 prettier
typescript jest mocha jasmine stylelint stylelint-config-standard markdownlint-cli htmlhint jshint
standard license-checker @commitlint/cli @commitlint/config-conventional), from Debian (shellcheck
cppcheck ruby php-cli lua5.4 wget golang-go), and what the machine has (git, curl, gcc, g++, javac,
cargo, node, npm, psql, sqlite3, perl, tclsh, cmake, make, docker).

The third batch adds, from PyPI in TOOLS_VENV: pytest-bdd radon bashate proselint robotframework
lizard pydoclint darglint flake8-bandit tap.py (not pytest-tap, whose plugin no longer loads in
today's pytest); in SCANNERS_VENV: semgrep trufflehog gixy; from npm: tape @cucumber/cucumber
secretlint @secretlint/secretlint-rule-preset-recommend eslint-plugin-security jsonlint sass less
pyright lockfile-lint csslint uvu tslint node-pg-migrate pg knex sequelize-cli sequelize write-good
alex dockerfilelint solhint; from Debian: clang bats libxml2-utils tidy shfmt chktex gfortran tcc
nasm bison flex redis-tools mariadb-client ruby-rspec cucumber gnupg valgrind jq php-codesniffer
rubocop checkstyle rsync netcat-openbsd, and maven's local repository. Cases that mount a tiny
tmpfs need root; the ones on PostgreSQL need it at 127.0.0.1:5432 (scripts/ensure-postgres.sh).

Cases after the first ones get a CI runner's framing in turn (GitHub Actions, GitLab, Jenkins,
Azure Pipelines, Travis, none): the runner's timestamps and its own lines around the output.
``labels.csv`` records each case's tool (for leave-tools-out folds), framing and set: ``dev`` for
the cases the knowledge base was developed on, ``widened`` for those added later, measured first
before anything was tuned on them.
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
SCANNERS_VENV = Path(os.environ.get("SCANNERS_VENV", "/tmp/tools2"))
"""A second venv for semgrep, trufflehog and gixy, whose pins clash with the linters'."""


@dataclass(frozen=True)
class Case:
    id: str
    label: str
    script: str
    needs: tuple[str, ...] = ()
    alt: str = ""
    tool: str = ""
    """What prints the log, for leave-tools-out folds (default: the first of ``needs``)."""
    framing: str = ""
    """A CI runner's framing put around the tool's output (see :func:`frame`), or none."""


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

# Tools added to widen the corpus. Each case still runs the real tool on a broken input; the
# log of each gets a CI runner's framing in turn (FRAMINGS), as a real job log would have.
BAD_PY = py("app.py", """\
import os, sys
def compute( a,b ):
    result=a+b
    l = 1
    return reslt
class thing:
    def Method(self): pass
""")
MORE_CASES: list[Case] = [
    # --- LINT
    Case("pycodestyle", "LINT", BAD_PY + "pycodestyle app.py", ("pycodestyle",)),
    Case("pydocstyle", "LINT", BAD_PY + "pydocstyle app.py", ("pydocstyle",)),
    Case("pyflakes", "LINT", BAD_PY + "pyflakes app.py", ("pyflakes",), alt="TYPECHECK"),
    Case("codespell", "LINT", py("README.md", "# Setup\n\nThis programm recieves the adress of the servr.\n")
         + "codespell README.md", ("codespell",)),
    Case("yamllint", "LINT", py("config.yaml", "jobs:\n   build:\n     steps: [a,b]   \n  test: yes\n")
         + "yamllint -f parsable config.yaml", ("yamllint",)),
    Case("vulture", "LINT", py("app.py", "import os\n\ndef used():\n    return 1\n\ndef never_called():\n    x = 2\n    return used()\n")
         + "vulture --min-confidence 60 app.py", ("vulture",)),
    Case("sqlfluff", "LINT", py("q.sql", "SELECT a,b from t where a=1  \n")
         + "sqlfluff lint --dialect ansi q.sql", ("sqlfluff",)),
    Case("doc8", "LINT", py("README.rst", "Title\n=====\n\n" + "word " * 40 + "\n\ntrailing   \n") + "doc8 README.rst",
         ("doc8",)),
    Case("rstcheck", "LINT", py("README.rst", "Title\n===\n\n.. code-block:: python\n\n   def f(:\n\n`unclosed\n")
         + "rstcheck README.rst", ("rstcheck",)),
    Case("mdformat-check", "LINT", py("README.md", "Title\n=====\n* one\n+ two\n\n\n\ntext\n") + "mdformat --check README.md",
         ("mdformat",)),
    Case("docformatter-check", "LINT", py("app.py", 'def f():\n    """   Do a thing.\n    """\n    return 1\n')
         + "docformatter --check app.py", ("docformatter",)),
    Case("autopep8-diff", "LINT", BAD_PY + "autopep8 --diff --exit-code app.py", ("autopep8",)),
    Case("pyupgrade", "LINT", py("app.py", "from typing import List\nx: List[int] = []\nprint('{}'.format(1))\nclass A(object): pass\n")
         + "pyupgrade --py311-plus app.py", ("pyupgrade",)),
    Case("cpplint", "LINT", py("main.cc", "#include <stdio.h>\nint main(){ printf(\"hi\"); return 0;}\n") + "cpplint main.cc",
         ("cpplint",)),
    Case("cmakelint", "LINT", py("CMakeLists.txt", "cmake_minimum_required(VERSION 3.10)\nPROJECT(x)\nadd_executable( x main.c )   \n")
         + "cmakelint CMakeLists.txt", ("cmakelint",)),
    Case("interrogate", "LINT", BAD_PY + "interrogate -v --fail-under 100 app.py", ("interrogate",)),
    Case("pylama", "LINT", BAD_PY + "pylama app.py", ("pylama",)),
    Case("xenon", "LINT", py("app.py", "def f(a, b, c, d):\n" + "".join(f"    if a == {i}:\n        return {i}\n" for i in range(12))
                              + "    return 0\n") + "xenon --max-absolute A app.py", ("xenon",)),
    Case("stylelint", "LINT", py(".stylelintrc.json", '{"extends": "stylelint-config-standard"}')
         + py("a.css", "a { color: #FFF; colr: red }\n\n\n.b{margin:0px}\n") + "stylelint a.css", ("stylelint",)),
    Case("markdownlint", "LINT", py("README.md", "# Title\n## Skipped\n* item\n+ other\n\n\nTrailing  \n") + "markdownlint README.md",
         ("markdownlint",)),
    Case("htmlhint", "LINT", py("index.html", "<html><head><title>x</title></head><body><DIV id=a id=b><img src=x></body></html>\n")
         + "htmlhint index.html", ("htmlhint",)),
    Case("jshint", "LINT", py("app.js", "function f(a) {\n  x = a == null\n  return x\n}\n") + "jshint app.js", ("jshint",)),
    Case("standard", "LINT", py("app.js", "var x = 1;\nfunction f (a,b) { return a }\n") + "standard app.js", ("standard",)),
    Case("cppcheck", "LINT", py("main.c", "int main(void) { int a[3]; a[5] = 1; int *p = 0; return *p + a[0]; }\n")
         + "cppcheck --error-exitcode=1 --enable=warning main.c", ("cppcheck",), alt="RUNTIME"),
    Case("ruff-security-rules", "SECURITY", py("app.py", "import pickle, subprocess\n\ndef load(b):\n    return pickle.loads(b)\n\n"
                                                 "def run(c):\n    return subprocess.call(c, shell=True)\n")
         + "ruff check --select S app.py", ("ruff",)),

    # --- TYPECHECK
    Case("gpp-compile", "TYPECHECK", py("main.cpp", "#include <string>\nint main() { std::string s = 42; undefined_fn(s); return s; }\n")
         + "g++ -c main.cpp", ("g++",)),
    Case("perl-syntax", "TYPECHECK", py("app.pl", "use strict;\nmy $x = ;\nprint $y\n") + "perl -c app.pl", ("perl",)),
    Case("node-check-syntax", "TYPECHECK", py("app.js", "function f( {\n  return 1\n}\n") + "node --check app.js", ("node",),
         tool="node-check"),
    Case("ruby-syntax", "TYPECHECK", py("app.rb", "def f(x\n  x +\nend\n") + "ruby -c app.rb", ("ruby",)),
    Case("php-lint", "TYPECHECK", py("app.php", "<?php\nfunction f($x {\n  return $x\n}\n") + "php -l app.php", ("php",)),
    Case("py-compile", "TYPECHECK", py("app.py", "def f(x):\n    return [x for x in\n") + "python -m py_compile app.py", (),
         tool="py_compile"),
    Case("luac-syntax", "TYPECHECK", py("app.lua", "function f(x)\n  return x +\nend\n") + "luac5.4 -p app.lua", ("luac5.4",)),
    Case("javac-missing-symbol", "TYPECHECK", py("App.java", "public class App { void f() { Strin s = helper(); } }\n")
         + "javac App.java", ("javac",)),

    # --- TEST_ASSERT
    Case("nose2", "TEST_ASSERT", py("test_calc.py", "import unittest\nclass T(unittest.TestCase):\n    def test_sum(self):\n"
                                       "        self.assertEqual(sum([1, 2]), 4)\n") + "nose2 -v", ("nose2",)),
    Case("behave", "TEST_ASSERT", "mkdir -p features/steps\n" + py("features/cart.feature", """\
Feature: cart
  Scenario: adding an item
    Given an empty cart
    When I add 2 apples
    Then the cart holds 3 items""") + py("features/steps/steps.py", """\
from behave import given, when, then
@given("an empty cart")
def s1(ctx): ctx.items = 0
@when("I add {n:d} apples")
def s2(ctx, n): ctx.items += n
@then("the cart holds {n:d} items")
def s3(ctx, n): assert ctx.items == n, f"cart holds {ctx.items}"
""") + "behave --no-color", ("behave",)),
    Case("doctest", "TEST_ASSERT", py("calc.py", 'def double(x):\n    """\n    >>> double(2)\n    5\n    """\n    return 2 * x\n')
         + "python -m doctest -v calc.py", (), tool="doctest"),
    Case("mocha", "TEST_ASSERT", py("test.js", "const assert = require('assert');\ndescribe('sum', () => {\n"
                                       "  it('adds', () => { assert.strictEqual(1 + 1, 3); });\n});\n") + "mocha test.js", ("mocha",)),
    Case("node-tap", "TEST_ASSERT", py("t.test.js", "const t = require('tap');\nt.equal(1 + 1, 3, 'one plus one');\n")
         + "node t.test.js", ("node",), tool="tap"),
    Case("jasmine", "TEST_ASSERT", "mkdir -p spec/support\n" + py("spec/support/jasmine.json", '{"spec_dir": "spec", "spec_files": ["**/*[sS]pec.js"]}')
         + py("spec/calcSpec.js", "describe('calc', () => { it('multiplies', () => { expect(2 * 3).toEqual(7); }); });\n")
         + "jasmine", ("jasmine",)),
    Case("perl-prove", "TEST_ASSERT", "mkdir t\n" + py("t/basic.t", "use Test::More tests => 2;\nok(1, 'truth');\n"
                                                        "is(2 + 2, 5, 'arithmetic');\n") + "prove t/", ("prove",)),
    Case("ctest", "TEST_ASSERT", py("CMakeLists.txt", "cmake_minimum_required(VERSION 3.10)\nproject(t C)\nenable_testing()\n"
                                       "add_executable(check check.c)\nadd_test(NAME check COMMAND check)\n")
         + py("check.c", '#include <assert.h>\nint main(void) { assert(1 + 1 == 3); return 0; }\n')
         + "cmake -S . -B build >/dev/null && cmake --build build >/dev/null && cd build && ctest --output-on-failure",
         ("cmake",)),
    Case("ruby-minitest", "TEST_ASSERT", py("test_calc.rb", "require 'minitest/autorun'\nclass TestCalc < Minitest::Test\n"
                                               "  def test_add\n    assert_equal 5, 2 + 2\n  end\nend\n") + "ruby test_calc.rb",
         ("ruby",), tool="minitest"),

    # --- SECURITY
    Case("bandit-yaml-load", "SECURITY", py("loader.py", "import yaml, hashlib\n\ndef read(s):\n    return yaml.load(s)\n\n"
                                               "def h(b):\n    return hashlib.md5(b).hexdigest()\n") + "bandit -q loader.py",
         ("bandit",)),
    Case("detect-secrets-private-key", "SECURITY", "git init -q . && " + py("deploy.txt", "-----BEGIN RSA PRIVATE KEY-----\n"
         "MIIEowIBAAKCAQEA1v2gY7q\n-----END RSA PRIVATE KEY-----\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
         + "detect-secrets-hook deploy.txt", ("detect-secrets-hook",)),

    # --- POLICY
    Case("pip-licenses-fail-on", "POLICY", 'pip-licenses --from=mixed --fail-on="MIT License;MIT"', ("pip-licenses",)),
    Case("liccheck", "POLICY", py("strategy.ini", "[Licenses]\nauthorized_licenses:\n    apache software\n"
                                       "unauthorized_licenses:\n    mit\n    bsd\n")
         + py("requirements.txt", "pyyaml\nidna\n") + "liccheck -s strategy.ini -r requirements.txt", ("liccheck",)),
    Case("reuse-lint", "POLICY", "git init -q . && " + py("main.py", "print('hi')") + "git add main.py && reuse lint", ("reuse",)),
    Case("license-checker", "POLICY", "cp -r " + str(NPM_TOOLS) + "/package.json . && ln -s " + str(NPM_TOOLS)
         + "/node_modules node_modules && license-checker --production --failOn 'MIT;ISC'", ("license-checker",)),
    Case("commitlint", "POLICY", py("commitlint.config.js", "module.exports = {extends: ['@commitlint/config-conventional']};")
         + "ln -s " + str(NPM_TOOLS) + "/node_modules node_modules\necho 'fixed stuff.' | commitlint", ("commitlint",),
         alt="LINT"),

    # --- SCHEMA_MIGRATION
    Case("sqlite3-missing-table", "SCHEMA_MIGRATION", py("0003.sql", "ALTER TABLE invoices ADD COLUMN paid_at TEXT;")
         + "sqlite3 -bail app.db < 0003.sql", ("sqlite3",)),
    Case("sqlite3-duplicate-column", "SCHEMA_MIGRATION", py("m.sql", "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);\n"
                                                               "ALTER TABLE users ADD COLUMN email TEXT;")
         + "sqlite3 -bail app.db < m.sql", ("sqlite3",)),
    Case("yoyo-apply", "SCHEMA_MIGRATION", "mkdir migrations\n" + py("migrations/0001_init.sql", "CREATE TABLE orders (id INTEGER PRIMARY KEY);")
         + py("migrations/0002_index.sql", "-- depends: 0001_init\nCREATE INDEX orders_customer ON orders (customer_id);")
         + "yoyo apply --batch --database sqlite:///app.db migrations", ("yoyo",)),

    # --- INFRA
    Case("apt-get-unknown-package", "INFRA", "apt-get install -y --no-download libfrobnicate-dev-nonexistent", ("apt-get",)),
    Case("pip-no-matching-distribution", "INFRA", "mkdir -p index && pip download --no-index --find-links index frobnicate-nonexistent==1.0",
         ("pip",)),
    Case("make-no-rule", "INFRA", py("Makefile", "all: build\n\t@echo done\n") + "make all", ("make",)),
    Case("java-heap-oom", "INFRA", py("Big.java", "public class Big { public static void main(String[] a) { long[][] m = new long[1000][];"
                                         " for (int i = 0; i < 1000; i++) m[i] = new long[1 << 20]; } }\n")
         + "javac Big.java && java -Xmx32m Big", ("javac",), tool="java"),
    Case("node-heap-oom", "INFRA", "node --max-old-space-size=16 -e 'const a = []; while (true) a.push(new Array(1e5).fill(1));'",
         ("node",), tool="node-oom"),
    Case("file-size-limit", "INFRA", "ulimit -f 10; python -c \"open('big.bin', 'wb').write(b'x' * 10_000_000)\"", (),
         tool="ulimit"),

    # --- RUNTIME
    Case("ruby-nomethod", "RUNTIME", py("app.rb", "def total(order)\n  order[:items].sum\nend\nputs total({})\n") + "ruby app.rb",
         ("ruby",)),
    Case("php-fatal", "RUNTIME", py("app.php", "<?php\nfunction total($o) { return count($o->items); }\necho total(null);\n")
         + "php app.php", ("php",)),
    Case("perl-die", "RUNTIME", py("job.pl", "use strict;\nmy %cfg = ();\ndie \"config key 'name' missing\\n\" unless $cfg{name};\n")
         + "perl job.pl", ("perl",)),
    Case("lua-error", "RUNTIME", py("app.lua", "local cfg = nil\nprint(cfg.name)\n") + "lua5.4 app.lua", ("lua5.4",)),
    Case("cpp-uncaught-exception", "RUNTIME", py("main.cpp", "#include <vector>\nint main() { std::vector<int> v; return v.at(3); }\n")
         + "g++ -o main main.cpp && ./main", ("g++",)),
    Case("tcl-error", "RUNTIME", py("app.tcl", "set cfg [dict create]\nputs [dict get $cfg name]\n") + "tclsh app.tcl", ("tclsh",)),
    Case("node-unhandled-rejection", "RUNTIME", py("app.js", "async function load() { throw new Error('config not loaded'); }\nload();\n")
         + "node app.js", ("node",), tool="node-async"),
    Case("python-recursion", "RUNTIME", py("walk.py", "def walk(n):\n    return walk(n + 1)\nwalk(0)\n") + "python walk.py", (),
         tool="python-recursion"),

    # --- TRANSIENT
    Case("git-ls-remote-refused", "TRANSIENT", "git ls-remote http://127.0.0.1:9/repo.git", ("git",), tool="git-http"),
    Case("pip-index-refused", "TRANSIENT", "pip --isolated download --retries 1 --timeout 2 --index-url http://127.0.0.1:9/simple requests",
         ("pip",)),
    Case("npm-registry-refused", "TRANSIENT", "npm install --no-audit --fetch-retries=0 --registry http://127.0.0.1:9/ left-pad",
         ("npm",)),
    Case("wget-refused", "TRANSIENT", "wget --tries=1 http://127.0.0.1:9/artifact.tar.gz", ("wget",)),
    Case("wget-503", "TRANSIENT", 'wget --tries=1 "$HTTP/status/503"', ("wget",)),
    Case("ruby-http-refused", "TRANSIENT", "ruby -rnet/http -e 'Net::HTTP.get(URI(\"http://127.0.0.1:9/health\"))'", ("ruby",),
         alt="RUNTIME", tool="ruby-net-http"),

    # --- RATE_LIMIT
    Case("wget-429", "RATE_LIMIT", 'wget --tries=1 "$HTTP/status/429?retry_after=20"', ("wget",)),
    Case("pip-index-429", "RATE_LIMIT", 'pip --isolated download --retries 0 --index-url "$HTTP/status/429/simple" requests', ("pip",)),
    Case("npm-registry-429", "RATE_LIMIT", 'npm install --no-audit --fetch-retries=0 --registry "$HTTP/status/429/" left-pad',
         ("npm",)),
    Case("git-clone-429", "RATE_LIMIT", 'git clone "$HTTP/status/429/repo.git"', ("git",), tool="git-http"),
]
for _i, _case in enumerate(MORE_CASES):
    MORE_CASES[_i] = Case(_case.id, _case.label, _case.script, _case.needs, _case.alt, _case.tool,
                          ("github", "gitlab", "jenkins", "azure", "travis", "")[_i % 6])
CASES += MORE_CASES


# A second batch, added after the first was measured: more logs for the thin classes.
SECOND_CASES: list[Case] = [
    # --- SECURITY
    Case("bandit-pickle-exec", "SECURITY", py("job.py", "import pickle\n\ndef run(data, code):\n    obj = pickle.loads(data)\n"
                                                 "    exec(code)\n    assert obj, 'no object'\n    return obj\n")
         + "bandit -q -ll job.py", ("bandit",), tool="bandit"),
    Case("detect-secrets-github-token", "SECURITY", "git init -q . && " + py("settings.py", "GITHUB_TOKEN = 'ghp_16C7e42F292c6912E7710c838347Ae178B4a'\n"
         "SLACK = 'https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX'\n")
         + "detect-secrets-hook settings.py", ("detect-secrets-hook",)),
    Case("ruff-security-tls", "SECURITY", py("client.py", "import requests\n\ndef get(url):\n    return requests.get(url, verify=False)\n\n"
                                               "PASSWORD = 'hunter2'\n") + "ruff check --select S client.py", ("ruff",)),
    Case("bandit-sql-injection", "SECURITY", py("db.py", "def find(cur, name):\n    cur.execute(\"SELECT * FROM users WHERE name = '%s'\" % name)\n"
                                                 "    return cur.fetchall()\n") + "bandit -q db.py", ("bandit",)),

    # --- POLICY
    Case("pip-licenses-allow-only", "POLICY", 'pip-licenses --from=mixed --allow-only="Apache Software License;Apache-2.0"',
         ("pip-licenses",)),
    Case("license-checker-only-allow", "POLICY", "cp " + str(NPM_TOOLS) + "/package.json . && ln -s " + str(NPM_TOOLS)
         + "/node_modules node_modules && license-checker --production --onlyAllow 'Apache-2.0'", ("license-checker",)),
    Case("wget-403", "POLICY", 'wget --tries=1 "$HTTP/status/403"', ("wget",)),
    Case("git-clone-403", "POLICY", 'git clone "$HTTP/status/403/repo.git"', ("git",), tool="git-http"),
    Case("npm-registry-403", "POLICY", 'npm install --no-audit --fetch-retries=0 --registry "$HTTP/status/403/" left-pad',
         ("npm",), alt="INFRA"),
    Case("pip-index-403", "POLICY", 'pip --isolated download --retries 0 --index-url "$HTTP/status/403/simple" requests',
         ("pip",), alt="INFRA"),

    # --- RATE_LIMIT
    Case("ruby-http-429", "RATE_LIMIT", "ruby -rnet/http -e 'Net::HTTP.get_response(URI(ENV[\"HTTP\"] + \"/status/429\")).value'",
         ("ruby",), tool="ruby-net-http"),
    Case("php-http-429", "RATE_LIMIT", "php -r 'if (file_get_contents(getenv(\"HTTP\") . \"/status/429\") === false) exit(1);'",
         ("php",), tool="php-http"),
    Case("perl-http-tiny-429", "RATE_LIMIT", "perl -MHTTP::Tiny -e '$r = HTTP::Tiny->new->get(\"$ENV{HTTP}/status/429\"); "
         "die \"$r->{status} $r->{reason}\\n\" unless $r->{success}'", ("perl",), tool="perl-http-tiny"),
    Case("curl-429-verbose", "RATE_LIMIT", 'curl -sS -v --fail "$HTTP/status/429?retry_after=120" 2>&1', ("curl",)),

    # --- SCHEMA_MIGRATION
    Case("psql-relation-exists", "SCHEMA_MIGRATION", py("0001.sql", "CREATE TEMP TABLE invoices (id int);\nCREATE TEMP TABLE invoices (id int);")
         + "psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -f 0001.sql", ("psql",)),
    Case("sqlite3-no-such-column", "SCHEMA_MIGRATION", py("m.sql", "CREATE TABLE orders (id INTEGER PRIMARY KEY);\n"
                                                             "CREATE INDEX orders_by_customer ON orders (customer_id);")
         + "sqlite3 -bail app.db < m.sql", ("sqlite3",)),
    Case("alembic-not-up-to-date", "SCHEMA_MIGRATION", """\
alembic init -q migrations >/dev/null 2>&1 || alembic init migrations >/dev/null
sed -i 's|^sqlalchemy.url = .*|sqlalchemy.url = sqlite:///app.db|' alembic.ini
alembic revision -m first >/dev/null
alembic revision --autogenerate -m second
""", ("alembic",)),
    Case("yoyo-missing-dependency", "SCHEMA_MIGRATION", "mkdir migrations\n"
         + py("migrations/0002_add.sql", "-- depends: 0001_missing\nALTER TABLE orders ADD COLUMN total INTEGER;")
         + "yoyo apply --batch --database sqlite:///app.db migrations", ("yoyo",)),

    # --- INFRA and TRANSIENT
    Case("make-missing-tool", "INFRA", py("Makefile", "docs:\n\tsphinx-build-missing -b html docs out\n") + "make docs", ("make",)),
    Case("wget-dns", "TRANSIENT", "wget --tries=1 http://artifacts.invalid/pkg.tar.gz", ("wget",)),
    Case("git-clone-dns", "TRANSIENT", "git clone https://git.invalid/team/repo.git", ("git",), tool="git-http"),
    Case("npm-registry-503", "TRANSIENT", 'npm install --no-audit --fetch-retries=0 --registry "$HTTP/status/503/" left-pad',
         ("npm",)),
]
for _i, _case in enumerate(SECOND_CASES):
    SECOND_CASES[_i] = Case(_case.id, _case.label, _case.script, _case.needs, _case.alt, _case.tool,
                            ("azure", "travis", "", "github", "gitlab", "jenkins")[_i % 6])
MORE_CASES += SECOND_CASES
CASES += SECOND_CASES

# A third batch (issue 21's widening toward 300 logs): tools and families the corpus was thin on:
# linters whose findings are `file:line:col: message` with no failure word, TAP and BDD runners,
# more compilers, package managers and clients against a local server that answers 429/503/403
# or a closed port, disk full (a tiny tmpfs, /dev/full, ulimit -f), memory (ulimit -v), secrets
# and signatures, migration tools on the local PostgreSQL, and logs that say nothing (UNKNOWN).
PG = "postgresql://postgres@127.0.0.1:5432/postgres"
NODE_MODULES = "ln -s " + str(NPM_TOOLS) + "/node_modules node_modules\n"
TINY_FS = "mkdir mnt && mount -t tmpfs -o size=64k tmpfs mnt && trap 'umount mnt' EXIT\n"
JAVA_GET = py("Get.java", """\
import java.io.InputStream;
import java.net.URL;
public class Get {
    public static void main(String[] args) throws Exception {
        try (InputStream in = new URL(args[0]).openStream()) { System.out.println(in.readAllBytes().length); }
    }
}""") + "javac Get.java && "
GO_GET = py("go.mod", "module example.com/g\n\ngo 1.19") + py("main.go", """\
package main

import (
	"log"
	"net/http"
	"os"
)

func main() {
	resp, err := http.Get(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	if resp.StatusCode >= 400 {
		log.Fatalf("GET %s: %s", os.Args[1], resp.Status)
	}
}""") + "GOCACHE=$PWD/.cache go run . "
NODE_FETCH = ("node -e \"fetch(process.argv[1]).then(r => { if (!r.ok) throw new Error('GET ' + r.url + ': ' + r.status + ' ' + "
              "r.statusText); })\" ")
APT_LOCAL = ("mkdir -p lists/partial cache/archives/partial && echo \"deb $APT_URL bookworm main\" > sources.list && "
             "apt-get update -o Dir::Etc::sourcelist=$PWD/sources.list -o Dir::Etc::sourceparts=- -o Dir::State::Lists=$PWD/lists "
             "-o Dir::Cache=$PWD/cache -o APT::Update::Error-Mode=any -o Acquire::Retries=0")
WHEEL = py("mkwheel.py", """\
import base64, hashlib, sys, zipfile
name, requires = sys.argv[1], sys.argv[2]
meta = f"Metadata-Version: 2.1\\nName: {name}\\nVersion: 1.0\\n" + (f"Requires-Python: {requires}\\n" if requires != "-" else "")
files = {f"{name}/__init__.py": "", f"{name}-1.0.dist-info/METADATA": meta,
         f"{name}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: ci\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}
record = "".join(f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b'=').decode()},{len(v)}\\n"
                 for k, v in files.items()) + f"{name}-1.0.dist-info/RECORD,,\\n"
with zipfile.ZipFile(f"dist/{name}-1.0-py3-none-any.whl", "w") as z:
    for k, v in {**files, f"{name}-1.0.dist-info/RECORD": record}.items():
        z.writestr(k, v)""") + "mkdir dist && python mkwheel.py "
BAD_C = py("main.c", "#include <stdio.h>\nstruct order { int total; };\nint main(void) {\n  struct order o = {1};\n"
           "  printf(\"%d\\n\", o.count + pending_orders);\n  return 0;\n}\n")
DJANGO_APP = """\
django-admin startproject site_ . >/dev/null && python manage.py startapp shop
echo 'INSTALLED_APPS += ["shop"]' >> site_/settings.py
printf 'from django.db import models\\nclass Order(models.Model):\\n    total = models.IntegerField()\\n' > shop/models.py
python manage.py makemigrations shop >/dev/null
"""

THIRD_CASES: list[Case] = [
    # --- LINT: findings as file:line:col and a rule id, rarely a failure word
    Case("shfmt-diff", "LINT", py("deploy.sh", "#!/bin/sh\nif [ -f x ];then\n        echo  yes\nfi\n") + "shfmt -d deploy.sh", ("shfmt",)),
    Case("shellcheck-gcc", "LINT", py("run.sh", "#!/bin/bash\ncd $1\nrm -rf $DIR/*\necho `date`\n") + "shellcheck -f gcc run.sh",
         ("shellcheck",)),
    Case("phpcs", "LINT", py("app.php", "<?php\nfunction f($x){\nif($x==1){ return  1;}\n}\n") + "phpcs --standard=PSR12 app.php",
         ("phpcs",)),
    Case("rubocop", "LINT", py("app.rb", "def Total( items )\n  items.map{|i| i*2 }.sum\nend\n") + "rubocop --no-color app.rb",
         ("rubocop",)),
    Case("checkstyle", "LINT", py("App.java", "public class App{\n  public static void main(String[] args){ int X=1; }\n}\n")
         + "checkstyle -c /sun_checks.xml App.java", ("checkstyle",)),
    Case("chktex", "LINT", py("paper.tex", "\\documentclass{article}\n\\begin{document}\nSee Section \\ref{s} ... and `quotes\".\n"
                                  "\\end{document}\n") + "test -z \"$(chktex -q -n22 paper.tex | tee /dev/stderr)\"", ("chktex",)),
    Case("tidy-html", "LINT", py("index.html", "<html><head></head><body><p>one<p>two<img src=a.png></body></html>\n")
         + "tidy -q -e index.html", ("tidy",)),
    Case("lizard-ccn", "LINT", py("calc.py", "def f(a):\n" + "".join(f"    if a == {i}:\n        return {i}\n" for i in range(18))
                                 + "    return 0\n") + "lizard -C 10 -w calc.py", ("lizard",)),
    Case("bashate", "LINT", py("build.sh", "#!/bin/bash\nif [ -n \"$X\" ] ; then\n  echo hi   \nfi\n") + "bashate build.sh",
         ("bashate",)),
    Case("proselint", "LINT", py("README.md", "This is very unique and, at the end of the day, 100% perfect.\n")
         + "proselint check README.md", ("proselint",)),
    Case("pydoclint", "LINT", py("app.py", 'def f(a: int, b: int) -> int:\n    """Add.\n\n    Args:\n        a: one.\n    """\n    return a + b\n')
         + "pydoclint --style=google app.py", ("pydoclint",)),
    Case("darglint", "LINT", py("app.py", 'def f(a, b):\n    """Add.\n\n    Args:\n        a: one.\n\n    Returns:\n        The sum.\n\n    """\n'
                                  '    return a + b\n') + "darglint app.py", ("darglint",)),
    Case("csslint", "LINT", py("a.css", "a { color: red; color: red; }\n#id .x #y { width: 100px; padding: 5px; }\n")
         + "csslint --errors=duplicate-properties,ids a.css", ("csslint",)),
    Case("write-good", "LINT", py("README.md", "It is quite obvious that the build was started by the runner.\n")
         + "test -z \"$(write-good README.md | tee /dev/stderr)\"", ("write-good",)),
    Case("alex", "LINT", py("README.md", "# Setup\n\nThe master node kills the slave workers.\n") + "alex README.md", ("alex",)),
    Case("dockerfilelint", "LINT", py("Dockerfile", "FROM ubuntu\nRUN apt-get update\nRUN apt-get install curl\nADD . /app\n")
         + "dockerfilelint Dockerfile", ("dockerfilelint",)),
    # tslint crashes on the TypeScript it finds (a real crash of the linter, so RUNTIME).
    Case("tslint", "RUNTIME", py("tslint.json", '{"extends": "tslint:recommended"}') + py("app.ts", "var x = 1\nconsole.log(x)\n")
         + py("tsconfig.json", "{}") + NODE_MODULES + "tslint app.ts", ("tslint",)),
    Case("solhint", "LINT", py(".solhint.json", '{"extends": "solhint:recommended"}')
         + py("Token.sol", "pragma solidity ^0.4.0;\ncontract token { function f() { tx.origin; } }\n") + "solhint --max-warnings 0 Token.sol",
         ("solhint",)),
    Case("pylint-parseable", "LINT", py("app.py", "import os\nclass a:\n    def M(self, X):\n        return\n")
         + "pylint --output-format=parseable --disable=C0114 app.py", ("pylint",)),
    Case("flake8-pyflakes-only", "LINT", py("app.py", "import json\nfrom os import *\n\ndef f():\n    x = 1\n")
         + "flake8 --select F app.py", ("flake8",), alt="TYPECHECK"),
    Case("eslint-compact", "LINT", py("eslint.config.js", "module.exports = [{rules: {eqeqeq: 'error', 'no-var': 'error'}}];")
         + py("app.js", "var a = 1;\nif (a == '1') { console.log(a) }\n") + "eslint --format unix app.js", ("eslint",)),

    # --- TYPECHECK: compilers and checkers never seen before
    Case("clang-compile", "TYPECHECK", BAD_C + "clang -c main.c", ("clang",)),
    Case("tcc-compile", "TYPECHECK", BAD_C + "tcc -c main.c", ("tcc",)),
    Case("gfortran-compile", "TYPECHECK", py("calc.f90", "program calc\n  implicit none\n  integer :: n\n  n = 'one'\n  print *, total\nend program\n")
         + "gfortran -c calc.f90", ("gfortran",)),
    Case("nasm-error", "TYPECHECK", py("start.asm", "section .text\nglobal _start\n_start:\n  mov eax, ebx, ecx\n  jmp nowhere\n")
         + "nasm -f elf64 start.asm", ("nasm",)),
    Case("bison-grammar", "TYPECHECK", py("calc.y", "%token NUM\n%%\nexpr: expr '+' expr | NUM | missing_rule ;\n%%\n")
         + "bison calc.y", ("bison",)),
    Case("flex-scanner", "TYPECHECK", py("scan.l", "%%\n[0-9]+  { return NUM; }\n{undefined_def} { return X; }\n%%\n") + "flex scan.l",
         ("flex",)),
    Case("rustc-direct", "TYPECHECK", py("main.rs", "fn main() {\n    let v: Vec<u8> = vec![1];\n    let s: String = v;\n    undefined();\n}\n")
         + "rustc --edition 2021 main.rs", ("rustc",)),
    Case("go-build-unused", "TYPECHECK", py("go.mod", "module example.com/u\n\ngo 1.19") + py("main.go", "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\n"
         "func main() {\n\tx := 1\n}\n") + "GOCACHE=$PWD/.cache go build ./...", ("go",)),
    Case("javac-generics", "TYPECHECK", py("App.java", "import java.util.*;\npublic class App {\n  List<String> names() { List<Integer> xs = new ArrayList<>(); return xs; }\n}\n")
         + "javac -Xlint:all App.java", ("javac",)),
    Case("tsc-strict", "TYPECHECK", py("app.ts", "interface User { name: string }\nfunction greet(u: User) { return u.nmae.toUpperCase(); }\ngreet({ name: 1 });\n")
         + "tsc --noEmit --strict app.ts", ("tsc",)),
    Case("pyright", "TYPECHECK", py("app.py", "def f(x: int) -> str:\n    return x\n\nf('a').nope\n") + "pyright app.py", ("pyright",)),
    Case("mypy-strict", "TYPECHECK", py("app.py", "from typing import Optional\n\ndef n(x: Optional[str]) -> int:\n    return len(x)\n\ndef g(a):\n    return a\n")
         + "mypy --strict --no-incremental app.py", ("mypy",)),
    Case("sass-compile", "TYPECHECK", py("app.scss", ".a {\n  color: $undefined-colour;\n}\n") + "sass app.scss out.css", ("sass",)),
    Case("lessc-compile", "TYPECHECK", py("app.less", ".a {\n  color: @missing;\n  .mixin-not-there();\n}\n") + "lessc app.less", ("lessc",)),
    Case("bash-n-syntax", "TYPECHECK", py("deploy.sh", "#!/bin/bash\nif [ -f x ]; then\n  echo yes\n") + "bash -n deploy.sh", (),
         tool="bash-n"),
    Case("xmllint-malformed", "TYPECHECK", py("pom.xml", "<project>\n  <dependencies>\n    <dependency><artifactId>x</artifactId>\n  </dependencies>\n</project>\n")
         + "xmllint --noout pom.xml", ("xmllint",), alt="LINT"),
    Case("jq-parse-error", "TYPECHECK", py("config.json", '{\n  "name": "app",\n  "retries": 3\n  "timeout": 10\n}\n') + "jq . config.json",
         ("jq",), alt="LINT"),
    Case("jsonlint", "TYPECHECK", py("package.json", '{\n  "name": "app",\n  "version": "1.0.0",\n}\n') + "jsonlint package.json",
         ("jsonlint",), alt="LINT"),
    Case("json-tool", "TYPECHECK", py("data.json", '{"a": 1, "b": [1, 2,]}\n') + "python -m json.tool data.json", (), tool="json.tool",
         alt="LINT"),
    Case("gcc-link-undefined", "TYPECHECK", py("main.c", "int compute(int);\nint main(void) { return compute(2); }\n") + "gcc -o main main.c",
         ("gcc",)),
    Case("php-lint-unexpected", "TYPECHECK", py("app.php", "<?php\nclass A {\n  public function f() {\n    return $this->x\n  }\n}\n")
         + "php -l app.php", ("php",)),

    # --- TEST_ASSERT: TAP, BDD and runners never seen before
    Case("bats-tap", "TEST_ASSERT", py("calc.bats", "@test \"adds\" {\n  result=\"$(( 1 + 1 ))\"\n  [ \"$result\" -eq 3 ]\n}\n"
                                          "@test \"passes\" {\n  true\n}\n") + "bats --tap calc.bats", ("bats",)),
    Case("bats-pretty", "TEST_ASSERT", py("cli.bats", "@test \"prints the version\" {\n  run echo 'v1.2'\n  [ \"$output\" = 'v1.3' ]\n}\n")
         + "bats cli.bats", ("bats",)),
    Case("tape", "TEST_ASSERT", py("test.js", "const test = require('tape');\ntest('totals', (t) => {\n  t.equal(1 + 2, 4, 'sum of items');\n  t.end();\n});\n")
         + NODE_MODULES + "node test.js", ("tape",)),
    Case("tappy", "TEST_ASSERT", py("test_calc.py", "import unittest\nclass T(unittest.TestCase):\n    def test_mul(self):\n"
                                         "        self.assertEqual(3 * 3, 10)\n") + "python -m tap", ("tappy",), tool="tappy"),
    Case("cucumber-ruby", "TEST_ASSERT", "mkdir -p features/step_definitions\n" + py("features/login.feature", """\
Feature: login
  Scenario: wrong password
    Given a user "ann" with password "s3cret"
    When she logs in with "guess"
    Then she sees "Welcome"
""") + py("features/step_definitions/steps.rb", """\
Given(/^a user "([^"]*)" with password "([^"]*)"$/) { |u, p| @users = { u => p } }
When(/^she logs in with "([^"]*)"$/) { |p| @ok = @users.values.include?(p) }
Then(/^she sees "([^"]*)"$/) { |m| raise "expected page to show #{m}" unless @ok }
""") + "cucumber --no-color", ("cucumber",)),
    Case("cucumber-js", "TEST_ASSERT", "mkdir -p features/steps\n" + py("features/cart.feature", """\
Feature: cart
  Scenario: totals
    Given a cart with 2 items at 5
    Then the total is 11
""") + py("features/steps/steps.js", """\
const { Given, Then } = require('@cucumber/cucumber');
const assert = require('assert');
Given('a cart with {int} items at {int}', function (n, p) { this.total = n * p; });
Then('the total is {int}', function (t) { assert.strictEqual(this.total, t); });
""") + NODE_MODULES + "cucumber-js", ("cucumber-js",)),
    Case("pytest-bdd", "TEST_ASSERT", py("cart.feature", "Feature: cart\n  Scenario: adding\n    Given an empty cart\n    When I add 2 items\n"
                                              "    Then the cart has 3 items\n") + py("test_cart.py", """\
from pytest_bdd import given, parsers, scenarios, then, when
scenarios("cart.feature")

@given("an empty cart", target_fixture="cart")
def cart():
    return []

@when(parsers.parse("I add {n:d} items"))
def add(cart, n):
    cart.extend(range(n))

@then(parsers.parse("the cart has {n:d} items"))
def check(cart, n):
    assert len(cart) == n
""") + "pytest -q -p no:cacheprovider -p no:pylama test_cart.py", ("pytest",), tool="pytest-bdd"),
    Case("rspec", "TEST_ASSERT", py("calc_spec.rb", "RSpec.describe 'calc' do\n  it 'adds' do\n    expect(1 + 1).to eq(3)\n  end\nend\n")
         + "rspec --no-color calc_spec.rb", ("rspec",)),
    Case("robotframework", "TEST_ASSERT", py("login.robot", "*** Test Cases ***\nTotals Match\n    ${total}=    Evaluate    2 + 2\n"
                                                  "    Should Be Equal As Integers    ${total}    5\n") + "robot --console verbose login.robot",
         ("robot",)),
    Case("uvu", "TEST_ASSERT", "mkdir tests\n" + py("tests/calc.js", "const { test } = require('uvu');\nconst assert = require('uvu/assert');\n"
                                                    "test('sum', () => { assert.is(1 + 2, 4); });\ntest.run();\n")
         + NODE_MODULES + "node tests/calc.js", ("uvu",)),
    Case("ruby-test-unit", "TEST_ASSERT", py("test_calc.rb", "require 'test/unit'\nclass TestCalc < Test::Unit::TestCase\n"
                                                  "  def test_sum\n    assert_equal(4, [1, 2].sum)\n  end\nend\n") + "ruby test_calc.rb",
         ("ruby",), tool="test-unit"),
    Case("go-test-fatal", "TEST_ASSERT", py("go.mod", "module example.com/t\n\ngo 1.19") + py("parse_test.go", """\
package t

import (
	"strconv"
	"testing"
)

func TestParse(t *testing.T) {
	for _, in := range []string{"1", "x"} {
		if _, err := strconv.Atoi(in); err != nil {
			t.Fatalf("parse %q: %v", in, err)
		}
	}
}""") + "GOCACHE=$PWD/.cache go test -v ./...", ("go",)),
    Case("node-test-describe", "TEST_ASSERT", py("api.test.mjs", """\
import { describe, it } from 'node:test';
import assert from 'node:assert';
describe('api', () => {
  it('returns users', () => { assert.deepStrictEqual({ users: [1, 2] }, { users: [1, 2, 3] }); });
});""") + "node --test api.test.mjs", ("node",)),
    Case("jest-tofixed", "TEST_ASSERT", py("fmt.test.js", "const fmt = (n) => n.toFixed(1);\n"
                                              "test('formats money', () => { expect(fmt(2.345)).toBe('2.35'); });\n"
                                              "test('throws', () => { expect(() => fmt(1)).toThrow(); });\n")
         + "echo {} > package.json && jest --ci fmt.test.js", ("jest",)),
    Case("cargo-test-should-panic", "TEST_ASSERT", "cargo new --quiet --lib q && cd q && " + py("src/lib.rs", """\
pub fn div(a: i32, b: i32) -> Option<i32> { if b == 0 { None } else { Some(a / b) } }

#[cfg(test)]
mod tests {
    #[test]
    #[should_panic]
    fn divides_by_zero() { super::div(1, 0); }
    #[test]
    fn halves() { assert!(super::div(4, 2) == Some(3), "4 / 2 should be 3"); }
}""") + "cargo test --offline 2>&1", ("cargo",)),
    Case("perl-prove-verbose", "TEST_ASSERT", "mkdir t\n" + py("t/api.t", "use Test::More;\nis_deeply([1, 2], [1, 3], 'list');\n"
                                                             "like('abc', qr/z/, 'pattern');\ndone_testing();\n") + "prove -v t/",
         ("prove",)),
    Case("unittest-error-and-fail", "TEST_ASSERT", py("test_s.py", "import unittest\nclass S(unittest.TestCase):\n"
                                                          "    def test_upper(self):\n        self.assertEqual('a'.upper(), 'B')\n"
                                                          "    def test_in(self):\n        self.assertIn(3, [1, 2])\n")
         + "python -m unittest test_s", (), tool="unittest"),

    # --- SECURITY
    Case("semgrep", "SECURITY", py("rules.yml", """\
rules:
  - id: python-eval-user-input
    languages: [python]
    severity: ERROR
    message: eval() on request data allows code injection
    pattern: eval(request.args.get(...))
""") + py("app.py", "from flask import request\n\ndef calc():\n    return eval(request.args.get('expr'))\n")
         + "semgrep scan --metrics=off --disable-version-check --config rules.yml --error app.py", ("semgrep",)),
    Case("semgrep-secrets", "SECURITY", py("rules.yml", """\
rules:
  - id: hardcoded-aws-key
    languages: [generic]
    severity: WARNING
    message: An AWS access key id is hard-coded
    pattern-regex: AKIA[0-9A-Z]{16}
""") + py("settings.py", "AWS_KEY = 'AKIAIOSFODNN7EXAMPLE'\n")
         + "semgrep scan --metrics=off --disable-version-check --config rules.yml --error settings.py", ("semgrep",)),
    Case("trufflehog", "SECURITY", "git init -q . && " + py("deploy.env", "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n"
                                                                "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
         + "git add . && git -c user.email=a@x -c user.name=a commit -qm env && trufflehog --regex --entropy=False file://$PWD",
         ("trufflehog",)),
    Case("gixy", "SECURITY", py("nginx.conf", """\
http {
  server {
    listen 80;
    location ~ /proxy/(.*)$ {
      proxy_pass http://$1;
    }
    location /files {
      alias /srv/files/;
    }
    add_header X-Frame-Options SAMEORIGIN;
  }
}""") + "gixy nginx.conf", ("gixy",)),
    Case("secretlint", "SECURITY", py(".secretlintrc.json", '{"rules": [{"id": "@secretlint/secretlint-rule-preset-recommend"}]}')
         + py("config.js", "module.exports = { slack: 'xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx' };\n")
         + NODE_MODULES + "secretlint config.js", ("secretlint",)),
    Case("secretlint-private-key", "SECURITY", py(".secretlintrc.json", '{"rules": [{"id": "@secretlint/secretlint-rule-preset-recommend"}]}')
         + "ssh-keygen -q -t ed25519 -N '' -f id_deploy && " + NODE_MODULES + "secretlint id_deploy", ("secretlint",)),
    Case("eslint-plugin-security", "SECURITY", py(".eslintrc.json", '{"root": true, "parserOptions": {"ecmaVersion": 2020}, '
                                                   '"plugins": ["security"], "extends": ["plugin:security/recommended-legacy"]}')
         + py("app.js", "const cp = require('child_process');\nmodule.exports = (cmd, re) => { cp.exec(cmd); return new RegExp(re); };\n")
         + NODE_MODULES + "ESLINT_USE_FLAT_CONFIG=false eslint --max-warnings 0 app.js", ("eslint",), tool="eslint-plugin-security",
         alt="LINT"),
    Case("flake8-bandit", "SECURITY", py("app.py", "import subprocess\nimport hashlib\n\ndef run(c):\n    subprocess.Popen(c, shell=True)\n"
                                              "    return hashlib.md5(c.encode())\n\nSECRET_KEY = 'dev-secret-123'\n")
         + "flake8 --select S app.py", ("flake8",), tool="flake8-bandit"),
    Case("bandit-requests-verify", "SECURITY", py("client.py", "import requests\n\ndef get(u):\n    return requests.get(u, verify=False, timeout=3)\n"
                                                       "\nTOKEN = 'ghp_abcdef'\npassword = 'hunter2'\n") + "bandit client.py", ("bandit",)),
    Case("lockfile-lint", "SECURITY", py("package-lock.json", """\
{
  "name": "app", "version": "1.0.0", "lockfileVersion": 1, "requires": true,
  "dependencies": {
    "left-pad": {"version": "1.3.0", "resolved": "http://registry.evil.example/left-pad/-/left-pad-1.3.0.tgz",
                 "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQEM==" }
  }
}""") + "lockfile-lint --path package-lock.json --type npm --validate-https --allowed-hosts npm", ("lockfile-lint",), alt="POLICY"),
    Case("gpg-bad-signature", "SECURITY", "export GNUPGHOME=$PWD/gnupg && mkdir -m 700 gnupg\n"
         "gpg --batch --passphrase '' --quick-gen-key 'Release Bot <release@example.com>' ed25519 sign never 2>/dev/null\n"
         "echo 'release 1.4.2' > app.tar && gpg --batch --detach-sign app.tar 2>/dev/null && echo 'patched' >> app.tar\n"
         "gpg --verify app.tar.sig app.tar", ("gpg",)),
    Case("pip-hash-mismatch", "SECURITY", WHEEL + "internal_lib - && echo \"./dist/internal_lib-1.0-py3-none-any.whl "
         "--hash=sha256:$(printf 0%.0s $(seq 64))\" > requirements.txt\n"
         "pip --isolated install --no-index --require-hashes -r requirements.txt", ("pip",), tool="pip-hashes"),
    Case("sha256sum-mismatch", "SECURITY", "echo 'artifact body' > app.tar.gz && echo \"$(printf 0%.0s $(seq 64))  app.tar.gz\" > SHA256SUMS\n"
         "sha256sum -c SHA256SUMS", ("sha256sum",), alt="TRANSIENT"),
    Case("detect-secrets-db-url", "SECURITY", "git init -q . && " + py("db.py", "DATABASE_URL = 'postgres://admin:Sup3rS3cretPassw0rd@db:5432/app'\n"
                                                                      "STRIPE = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'\n")
         + "git add db.py && detect-secrets-hook db.py", ("detect-secrets-hook",)),
    Case("ruff-security-sql", "SECURITY", py("repo.py", "import sqlite3\n\ndef find(db, name):\n"
                                                 "    return db.execute(f\"SELECT * FROM users WHERE name = '{name}'\")\n\n"
                                                 "def tmp():\n    return open('/tmp/report.txt', 'w')\n") + "ruff check --select S repo.py",
         ("ruff",)),

    # --- POLICY: refusals by a rule of the organisation
    Case("git-deny-non-fast-forward", "POLICY", """\
git init -q --bare server.git && git -C server.git config receive.denyNonFastForwards true
git clone -q server.git a 2>/dev/null && cd a
git -c user.email=a@x -c user.name=a commit -q --allow-empty -m one && git push -q origin HEAD:main
git -c user.email=a@x -c user.name=a commit -q --amend --allow-empty -m rewritten && git push --force origin HEAD:main
""", ("git",)),
    Case("git-deny-deletes", "POLICY", """\
git init -q --bare server.git && git -C server.git config receive.denyDeletes true
git clone -q server.git a 2>/dev/null && cd a
git -c user.email=a@x -c user.name=a commit -q --allow-empty -m one && git push -q origin HEAD:release
git push origin :release
""", ("git",)),
    Case("git-update-hook", "POLICY", """\
git init -q --bare server.git
printf '#!/bin/sh\\ncase "$1" in refs/tags/v*) echo "tags v* may only be pushed by the release job"; exit 1;; esac\\n' > server.git/hooks/update
chmod +x server.git/hooks/update
git clone -q server.git a 2>/dev/null && cd a && git -c user.email=a@x -c user.name=a commit -q --allow-empty -m one
git tag v1.0 && git push origin v1.0
""", ("git",)),
    Case("git-push-checked-out", "POLICY", """\
git init -q -b main server && git -C server -c user.email=a@x -c user.name=a commit -q --allow-empty -m init
git clone -q server a && cd a && git -c user.email=a@x -c user.name=a commit -q --allow-empty -m change && git push origin main
""", ("git",), alt="INFRA"),
    Case("python-urllib-403", "POLICY", "python -c \"import os, urllib.request; urllib.request.urlopen(os.environ['HTTP'] + '/status/403/api/deploy')\"",
         (), tool="python"),
    Case("node-fetch-403", "POLICY", NODE_FETCH + '"$HTTP/status/403/v1/deployments"', ("node",), tool="node-fetch"),
    Case("java-http-403", "POLICY", JAVA_GET + 'java Get "$HTTP/status/403/artifacts/app.jar"', ("javac",), tool="java-url"),
    Case("go-http-403", "POLICY", GO_GET + '"$HTTP/status/403/v2/repo/manifests/latest"', ("go",), tool="go-http"),
    Case("perl-http-tiny-403", "POLICY", "perl -MHTTP::Tiny -e '$r = HTTP::Tiny->new->get(\"$ENV{HTTP}/status/403\"); "
         "die \"$r->{status} $r->{reason}\\n\" unless $r->{success}'", ("perl",), tool="perl-http-tiny"),
    Case("curl-403-verbose", "POLICY", 'curl -sS -i --fail-with-body "$HTTP/status/403/repos/org/app/releases"', ("curl",)),
    Case("pip-licenses-fail-on-bsd", "POLICY", 'pip-licenses --from=mixed --fail-on="BSD License;BSD-3-Clause"', ("pip-licenses",)),
    Case("license-checker-fail-on-apache", "POLICY", "cp " + str(NPM_TOOLS) + "/package.json . && " + NODE_MODULES
         + "license-checker --production --failOn 'Apache-2.0;BSD-2-Clause'", ("license-checker",)),
    Case("commitlint-wip", "POLICY", py("commitlint.config.js", "module.exports = {extends: ['@commitlint/config-conventional']};")
         + NODE_MODULES + "echo 'WIP' | commitlint", ("commitlint",), alt="LINT"),

    # --- RATE_LIMIT: 429s and quotas in many clients' words
    Case("node-fetch-429", "RATE_LIMIT", NODE_FETCH + '"$HTTP/status/429/v1/search"', ("node",), tool="node-fetch"),
    Case("java-http-429", "RATE_LIMIT", JAVA_GET + 'java Get "$HTTP/status/429/maven2/app.pom"', ("javac",), tool="java-url"),
    Case("go-http-429", "RATE_LIMIT", GO_GET + '"$HTTP/status/429/v2/library/alpine/manifests/3.19"', ("go",), tool="go-http"),
    Case("pip-install-429", "RATE_LIMIT", 'pip --isolated install --retries 0 --index-url "$HTTP/index/429/simple" left-pad-py', ("pip",)),
    Case("npm-view-429", "RATE_LIMIT", 'npm view --fetch-retries=0 --registry "$HTTP/status/429/" left-pad version', ("npm",)),
    Case("git-ls-remote-429", "RATE_LIMIT", 'git ls-remote "$HTTP/status/429/org/app.git"', ("git",), tool="git-http"),
    Case("wget-429-headers", "RATE_LIMIT", 'wget -S --tries=1 "$HTTP/status/429?retry_after=90"', ("wget",)),
    Case("curl-429-head", "RATE_LIMIT", 'curl -sS -I --fail "$HTTP/status/429?retry_after=15"', ("curl",)),
    Case("apt-update-429", "RATE_LIMIT", 'APT_URL="$HTTP/status/429/debian" && ' + APT_LOCAL, ("apt-get",), tool="apt-get"),
    Case("gem-install-429", "RATE_LIMIT", 'gem install --clear-sources --source "$HTTP/status/429/" rake-nonexistent', ("gem",)),
    Case("go-get-429", "RATE_LIMIT", "mkdir m && cd m && " + py("go.mod", "module example.com/m\n\ngo 1.19")
         + 'GOPROXY="$HTTP/status/429" GOSUMDB=off GOCACHE=$PWD/.cache GOMODCACHE=$PWD/.mod go get example.com/lib@v1.0.0',
         ("go",), tool="go-get"),
    Case("tcl-http-429", "RATE_LIMIT", py("get.tcl", "package require http\nset tok [http::geturl $env(HTTP)/status/429]\n"
                                               "if {[http::ncode $tok] >= 400} { puts stderr \"request failed: [http::code $tok]\"; exit 1 }\n")
         + "tclsh get.tcl", ("tclsh",), tool="tcl-http"),
    Case("python-urllib-429-api", "RATE_LIMIT", "python -c \"import os, urllib.request; "
         "urllib.request.urlopen(os.environ['HTTP'] + '/status/429/graphql?retry_after=3600')\"", (), tool="python"),

    # --- TRANSIENT: closed ports, 503s, timeouts, in many clients
    Case("pip-install-503", "TRANSIENT", 'pip --isolated install --retries 0 --index-url "$HTTP/index/503/simple" left-pad-py', ("pip",)),
    Case("pip-download-503", "TRANSIENT", 'pip --isolated download --retries 1 --index-url "$HTTP/index/503/simple" requests', ("pip",)),
    Case("ssh-refused", "TRANSIENT", "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -p 9 deploy@127.0.0.1 true", ("ssh",)),
    Case("redis-refused", "TRANSIENT", "redis-cli -h 127.0.0.1 -p 9 ping", ("redis-cli",)),
    Case("mysql-refused", "TRANSIENT", "mysql -h 127.0.0.1 -P 9 -u ci -e 'select 1'", ("mysql",)),
    Case("psql-refused", "TRANSIENT", "psql -h 127.0.0.1 -p 9 -U postgres -c 'select 1'", ("psql",)),
    Case("nc-refused", "TRANSIENT", "nc -vz -w 2 127.0.0.1 9", ("nc",)),
    Case("rsync-refused", "TRANSIENT", "mkdir out && rsync -av rsync://127.0.0.1:9/artifacts/ out/", ("rsync",)),
    Case("node-fetch-refused", "TRANSIENT", NODE_FETCH + "http://127.0.0.1:4/health", ("node",), tool="node-fetch"),
    Case("node-fetch-503", "TRANSIENT", NODE_FETCH + '"$HTTP/status/503/v1/status"', ("node",), tool="node-fetch"),
    Case("java-http-503", "TRANSIENT", JAVA_GET + 'java Get "$HTTP/status/503/maven2/app.pom"', ("javac",), tool="java-url"),
    Case("java-http-refused", "TRANSIENT", JAVA_GET + "java Get http://127.0.0.1:9/maven2/app.pom", ("javac",), tool="java-url"),
    Case("go-http-refused", "TRANSIENT", GO_GET + "http://127.0.0.1:9/v2/", ("go",), tool="go-http"),
    Case("go-get-refused", "TRANSIENT", "mkdir m && cd m && " + py("go.mod", "module example.com/m\n\ngo 1.19")
         + "GOPROXY=http://127.0.0.1:9 GOSUMDB=off GOCACHE=$PWD/.cache GOMODCACHE=$PWD/.mod go get example.com/lib@v1.0.0",
         ("go",), tool="go-get"),
    Case("gem-install-refused", "TRANSIENT", "gem install --clear-sources --source http://127.0.0.1:9/ rake-nonexistent", ("gem",)),
    Case("gem-install-503", "TRANSIENT", 'gem install --clear-sources --source "$HTTP/status/503/" rake-nonexistent', ("gem",)),
    Case("apt-update-refused", "TRANSIENT", "APT_URL=http://127.0.0.1:9/debian && " + APT_LOCAL, ("apt-get",), tool="apt-get"),
    Case("apt-update-503", "TRANSIENT", 'APT_URL="$HTTP/status/503/debian" && ' + APT_LOCAL, ("apt-get",), tool="apt-get"),
    Case("curl-timeout", "TRANSIENT", 'curl -sS --max-time 1 "$HTTP/sleep/3"', ("curl",)),
    Case("wget-timeout", "TRANSIENT", 'wget --tries=1 --timeout=1 "$HTTP/sleep/3"', ("wget",)),
    Case("git-fetch-503", "TRANSIENT", 'git clone "$HTTP/status/503/org/app.git"', ("git",), tool="git-http"),
    Case("python-urllib-503", "TRANSIENT", "python -c \"import os, urllib.request; urllib.request.urlopen(os.environ['HTTP'] + '/status/503/api')\"",
         (), tool="python"),
    Case("tcl-http-refused", "TRANSIENT", py("get.tcl", "package require http\nset tok [http::geturl http://127.0.0.1:9/health]\n")
         + "tclsh get.tcl", ("tclsh",), tool="tcl-http"),
    Case("npm-registry-502", "TRANSIENT", 'npm install --no-audit --fetch-retries=0 --registry "$HTTP/status/502/" left-pad', ("npm",)),

    # --- INFRA: disk, memory, missing binaries and libraries, platform mismatches
    Case("tmpfs-full-dd", "INFRA", TINY_FS + "dd if=/dev/zero of=mnt/cache.bin bs=4k count=100", (), tool="dd"),
    Case("tmpfs-full-cp", "INFRA", TINY_FS + "head -c 200000 /dev/zero > big.bin && cp big.bin mnt/", (), tool="cp"),
    Case("tmpfs-full-tar", "INFRA", TINY_FS + "head -c 300000 /dev/urandom > a.bin && tar -cf mnt/backup.tar a.bin", (), tool="tar"),
    Case("tmpfs-full-pip", "INFRA", TINY_FS + WHEEL + "big_pkg - && head -c 200000 /dev/urandom > payload && python -c \"import zipfile; "
         "z = zipfile.ZipFile('dist/big_pkg-1.0-py3-none-any.whl', 'a'); z.write('payload', 'big_pkg/payload.bin')\" && "
         "pip --isolated install --no-index --no-compile --target mnt/site dist/big_pkg-1.0-py3-none-any.whl", ("pip",), alt="RUNTIME",
         tool="pip-target"),
    Case("tmpfs-full-git", "INFRA", TINY_FS + "git init -q mnt/repo && head -c 300000 /dev/urandom > mnt/repo/blob && cd mnt/repo && git add blob",
         ("git",), tool="git-add"),
    Case("tmpfs-full-sqlite", "INFRA", TINY_FS + "sqlite3 mnt/app.db \"create table t(x); with recursive c(i) as (select 1 union all "
         "select i + 1 from c where i < 20000) insert into t select randomblob(100) from c;\"", ("sqlite3",), tool="sqlite3-disk"),
    Case("gzip-dev-full", "INFRA", "head -c 100000 /dev/urandom > log.txt && gzip -c log.txt > /dev/full", (), tool="gzip"),
    Case("ulimit-fsize-cp", "INFRA", "head -c 100000 /dev/zero > a.bin && ulimit -f 20 && cp a.bin b.bin", (), tool="cp"),
    Case("ruby-oom", "INFRA", "ulimit -v 300000; ruby -e 'a = \"x\" * (1 << 30)'", ("ruby",), tool="ruby-oom"),
    Case("perl-oom", "INFRA", "ulimit -v 200000; perl -e '$x = \"x\" x (1 << 31)'", ("perl",), tool="perl-oom"),
    Case("php-memory-limit", "INFRA", "php -d memory_limit=16M -r '$a = str_repeat(\"x\", 64 * 1024 * 1024);'", ("php",), alt="RUNTIME",
         tool="php-memory"),
    Case("lua-oom", "INFRA", "ulimit -v 100000; lua5.4 -e 'local t = {} for i = 1, 1e9 do t[i] = string.rep(\"x\", 1000) .. i end'",
         ("lua5.4",), tool="lua-oom"),
    Case("gcc-oom", "INFRA", py("gen.py", "print('int a[] = {' + ','.join(['1'] * 2000000) + '};')") + "python gen.py > big.c && "
         "ulimit -v 150000 && gcc -c big.c", ("gcc",), tool="gcc-oom"),
    Case("python-too-many-files", "INFRA", "ulimit -n 32; python -c \"fs = [open('/dev/null') for _ in range(100)]\"", (),
         tool="python-fds"),
    Case("missing-shared-library", "INFRA", py("lib.c", "int answer(void) { return 42; }") + py("main.c", "int answer(void);\nint main(void) { return answer(); }")
         + "gcc -shared -fPIC -o libanswer.so lib.c && gcc -o main main.c -L. -lanswer && rm libanswer.so && ./main", ("gcc",),
         tool="ld.so"),
    Case("sh-not-found", "INFRA", "sh -c 'echo packaging; fpm -s dir -t deb .'", (), tool="sh"),
    Case("env-no-such-file", "INFRA", "env node18 --version", (), tool="env"),
    Case("venv-interpreter-missing", "INFRA", "./.venv/bin/python -m pytest", (), tool="bash"),
    Case("git-lfs-missing", "INFRA", "git init -q . && git lfs pull", ("git",), tool="git-lfs"),
    Case("docker-build-no-daemon", "INFRA", py("Dockerfile", "FROM alpine:3.19\nRUN true\n") + "docker build -t app:ci .", ("docker",)),
    Case("docker-push-no-daemon", "INFRA", "docker push registry.example.com/team/app:1.4.2", ("docker",)),
    Case("javac-release-unsupported", "INFRA", py("App.java", "public class App {}\n") + "javac --release 99 App.java", ("javac",), tool="jdk"),
    Case("pip-requires-python", "INFRA", WHEEL + "future_only '>=4.0' && pip --isolated install --no-index dist/future_only-1.0-py3-none-any.whl",
         ("pip",)),
    Case("go-module-lookup-disabled", "INFRA", py("go.mod", "module example.com/x\n\ngo 1.19") + py("main.go", "package main\n\n"
         "import \"github.com/acme/widgets\"\n\nfunc main() { widgets.Run() }\n") + "GOPROXY=off GOCACHE=$PWD/.cache go build ./...",
         ("go",), alt="TYPECHECK"),
    Case("cargo-offline-missing-crate", "INFRA", "cargo new --quiet app && cd app && echo 'serde_frobnicate = \"1\"' >> Cargo.toml && "
         "cargo build --offline 2>&1", ("cargo",)),
    Case("npm-offline-not-cached", "INFRA", "npm install --offline --no-audit --cache $PWD/.npm left-pad-frobnicate", ("npm",)),
    Case("npm-engine-strict", "INFRA", py("package.json", '{"name": "app", "version": "1.0.0", "engines": {"node": ">=99"}}')
         + "npm install --engine-strict --offline --no-audit", ("npm",)),
    Case("gem-local-missing", "INFRA", "gem install --local frobnicate-nonexistent", ("gem",)),
    Case("read-only-fs", "INFRA", "mkdir mnt && mount -t tmpfs -o ro,size=64k tmpfs mnt && trap 'umount mnt' EXIT\n"
         "echo 'build 1.4.2' > mnt/BUILD_INFO", (), tool="bash"),
    Case("mvn-offline-missing", "INFRA", py("pom.xml", """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>com.example</groupId><artifactId>app</artifactId><version>1.0</version>
  <dependencies>
    <dependency><groupId>com.example.none</groupId><artifactId>frobnicate</artifactId><version>9.9</version></dependency>
  </dependencies>
</project>""") + "mvn -B -o validate dependency:resolve", ("mvn",)),

    # --- RUNTIME: crashes in languages and runtimes never seen before
    Case("gfortran-bounds", "RUNTIME", py("a.f90", "program a\n  integer :: x(3), i\n  i = 5\n  x(i) = 1\n  print *, x\nend program\n")
         + "gfortran -fcheck=bounds -o a a.f90 && ./a", ("gfortran",), tool="gfortran-run"),
    Case("valgrind-invalid-read", "RUNTIME", py("main.c", "#include <stdlib.h>\nint main(void) { int *p = malloc(4); free(p); return p[0]; }\n")
         + "gcc -g -o main main.c && valgrind -q --error-exitcode=1 ./main", ("valgrind",)),
    Case("c-assert-abort", "RUNTIME", py("main.c", "#include <assert.h>\nint main(void) { int queue_len = 0; assert(queue_len > 0); return 0; }\n")
         + "clang -o main main.c && ./main", ("clang",), tool="c-assert"),
    Case("cpp-terminate", "RUNTIME", py("main.cpp", "#include <stdexcept>\nint main() { throw std::runtime_error(\"config file unreadable\"); }\n")
         + "g++ -o main main.cpp && ./main", ("g++",)),
    Case("awk-fatal", "RUNTIME", "printf 'a 0\\nb 2\\n' > data.txt && awk '{ print $1, 10 / $2 }' data.txt", ("awk",)),
    Case("jq-runtime-error", "RUNTIME", "echo '{\"items\": 3}' | jq '.items[] | .name'", ("jq",)),
    Case("bash-unbound-variable", "RUNTIME", py("deploy.sh", "#!/bin/bash\nset -euo pipefail\necho \"deploying $APP_VERSION_UNSET\"\n")
         + "bash deploy.sh", (), tool="bash-strict"),
    Case("ruby-zero-division", "RUNTIME", py("avg.rb", "def avg(xs)\n  xs.sum / xs.size\nend\nputs avg([])\n") + "ruby avg.rb", ("ruby",)),
    Case("php-type-error", "RUNTIME", py("app.php", "<?php\ndeclare(strict_types=1);\nfunction total(int $n): int { return $n; }\necho total(\"3\");\n")
         + "php app.php", ("php",)),
    Case("perl-method-missing", "RUNTIME", py("job.pl", "package Job; sub new { bless {}, shift }\npackage main;\nJob->new->run;\n")
         + "perl job.pl", ("perl",)),
    Case("lua-runtime-traceback", "RUNTIME", py("app.lua", "local function load(cfg)\n  return cfg.path:upper()\nend\nload({})\n")
         + "lua5.4 app.lua", ("lua5.4",)),
    Case("node-range-error", "RUNTIME", "node -e \"const a = new Array(-1);\"", ("node",)),
    Case("python-zero-division-thread", "RUNTIME", py("job.py", "import threading\n\ndef work():\n    rate = 0\n    print(100 / rate)\n\n"
                                                       "t = threading.Thread(target=work)\nt.start(); t.join()\nraise SystemExit(1)\n")
         + "python job.py", (), tool="python"),
    Case("java-array-index", "RUNTIME", py("App.java", "public class App {\n  public static void main(String[] a) {\n    int[] xs = new int[2];\n"
                                                "    System.out.println(xs[a.length + 3]);\n  }\n}\n") + "javac App.java && java App",
         ("javac",), tool="java"),
    Case("go-nil-pointer", "RUNTIME", py("go.mod", "module example.com/n\n\ngo 1.19") + py("main.go", "package main\n\ntype Cfg struct{ Name string }\n\n"
         "func main() {\n\tvar c *Cfg\n\tprintln(c.Name)\n}\n") + "GOCACHE=$PWD/.cache go run .", ("go",)),
    Case("rust-overflow-panic", "RUNTIME", "cargo new --quiet app && cd app && " + py("src/main.rs", "fn main() {\n    let v: Vec<u32> = std::env::args().skip(5).map(|a| a.parse().unwrap()).collect();\n"
         "    let total: u32 = v.iter().sum::<u32>() - 1;\n    println!(\"{}\", total);\n}\n") + "cargo run --offline --quiet 2>&1", ("cargo",)),
    Case("tcc-run-segfault", "RUNTIME", py("main.c", "#include <string.h>\nint main(void) { char *p = 0; return strlen(p); }\n") + "tcc -run main.c",
         ("tcc",), tool="tcc-run"),
    Case("python-custom-exception", "RUNTIME", py("sync.py", "class SyncError(Exception):\n    pass\n\ndef sync(batch):\n"
                                                   "    raise SyncError(f'batch {batch} rejected by upstream: checksum mismatch')\n\nsync(7)\n")
         + "python sync.py", (), tool="python"),

    # --- SCHEMA_MIGRATION
    Case("node-pg-migrate", "SCHEMA_MIGRATION", "mkdir migrations && " + py("migrations/1700000000000_add-total.js",
         "exports.up = (pgm) => { pgm.addColumn('orders_nonexistent', { total: { type: 'integer' } }); };\nexports.down = () => {};\n")
         + NODE_MODULES + f"DATABASE_URL={PG} node-pg-migrate up --migrations-table pgmigrations_ci --no-lock", ("node-pg-migrate",)),
    Case("knex-migrate", "SCHEMA_MIGRATION", "mkdir migrations && " + py("knexfile.js", f"module.exports = {{ client: 'pg', connection: '{PG}', "
         "migrations: { tableName: 'knex_ci' } };")
         + py("migrations/20260101_index.js", "exports.up = (knex) => knex.schema.alterTable('invoices_nonexistent', (t) => t.index('customer_id'));\n"
              "exports.down = () => {};\n") + NODE_MODULES + "knex migrate:latest", ("knex",)),
    Case("sequelize-migrate", "SCHEMA_MIGRATION", "mkdir -p migrations config && " + py("config/config.json",
         '{"development": {"url": "' + PG + '", "dialect": "postgres", "migrationStorageTableName": "sequelize_ci"}}')
         + py("migrations/20260101000000-add-col.js", "module.exports = { up: (q, S) => q.addColumn('accounts_nonexistent', 'plan', S.STRING), down: () => {} };\n")
         + NODE_MODULES + "sequelize-cli db:migrate", ("sequelize-cli",)),
    Case("django-inconsistent-history", "SCHEMA_MIGRATION", DJANGO_APP + """\
printf 'from django.db import migrations\\nclass Migration(migrations.Migration):\\n    dependencies = [("shop", "0001_initial")]\\n    operations = []\\n' > shop/migrations/0002_noop.py
python manage.py migrate >/dev/null
python -c "import sqlite3; c = sqlite3.connect('db.sqlite3'); c.execute(\\"delete from django_migrations where app='shop' and name='0001_initial'\\"); c.commit()"
python manage.py migrate
""", ("django-admin",)),
    Case("django-migrate-missing-dependency", "SCHEMA_MIGRATION", DJANGO_APP + """\
printf 'from django.db import migrations\\nclass Migration(migrations.Migration):\\n    dependencies = [("shop", "0007_gone")]\\n    operations = []\\n' > shop/migrations/0002_next.py
python manage.py migrate
""", ("django-admin",)),
    Case("psql-column-missing", "SCHEMA_MIGRATION", py("0004.sql", "BEGIN;\nCREATE TEMP TABLE customers (id int primary key, name text);\n"
                                                            "UPDATE customers SET email = lower(email);\nCOMMIT;\n")
         + "psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -f 0004.sql", ("psql",)),
    Case("psql-fk-missing-table", "SCHEMA_MIGRATION", py("0005.sql", "CREATE TEMP TABLE payments (id int, invoice_id int REFERENCES invoices_missing(id));\n")
         + "psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -f 0005.sql", ("psql",)),
    Case("sqlite3-table-exists", "SCHEMA_MIGRATION", py("0001.sql", "CREATE TABLE orders (id INTEGER PRIMARY KEY);\nCREATE TABLE orders (id INTEGER PRIMARY KEY);\n")
         + "sqlite3 -bail app.db < 0001.sql", ("sqlite3",)),
    Case("python-sqlite-duplicate-column", "SCHEMA_MIGRATION", py("migrate.py", "import sqlite3\ndb = sqlite3.connect('app.db')\n"
         "db.execute('create table users (id integer primary key, email text)')\nfor step in ['alter table users add column email text']:\n"
         "    print('applying', step)\n    db.execute(step)\n") + "python migrate.py", (), tool="python-sqlite3"),
    Case("yoyo-bad-sql", "SCHEMA_MIGRATION", "mkdir migrations\n" + py("migrations/0001_init.sql", "CREATE TABLE orders (id INTEGER PRIMARY KEY);")
         + py("migrations/0002_rename.sql", "-- depends: 0001_init\nALTER TABLE orders RENAME COLUMN customer TO customer_id;")
         + "yoyo apply --batch --database sqlite:///app.db migrations", ("yoyo",)),

    # --- UNKNOWN: the step failed and its log does not say why
    Case("silent-false", "UNKNOWN", "echo 'Collecting artifacts'\necho 'Uploading build/app.tar.gz'\nfalse", (), tool="bash"),
    Case("test-f-missing", "UNKNOWN", "echo 'checking outputs'\ntest -f dist/app.whl", (), tool="test"),
    Case("grep-q-no-match", "UNKNOWN", "echo 'version=1.4.2' > build.info\ngrep -q 'version=2' build.info", ("grep",)),
    Case("diff-differ", "UNKNOWN", "echo a > expected.txt && echo b > actual.txt\ndiff -q expected.txt actual.txt", ("diff",)),
    Case("make-false", "UNKNOWN", py("Makefile", "release:\n\t@echo 'packaging release'\n\t@./scripts/check-release 2>/dev/null || exit 3\n")
         + "make release", ("make",)),
    Case("exit-after-banner", "UNKNOWN", "echo '=== deploy stage ==='\necho 'target: staging'\nexit 4", (), tool="bash"),
    Case("pytest-truncated", "UNKNOWN", PYTEST_ASSERT + "pytest -v -p no:pylama test_calc.py 2>&1 | head -n 6; exit 1", ("pytest",), tool="truncated"),
    Case("cmp-differ", "UNKNOWN", "printf 'abc' > a.bin && printf 'abd' > b.bin && cmp a.bin b.bin", ("cmp",)),
    Case("npm-run-silent", "UNKNOWN", py("package.json", '{"name": "app", "version": "1.0.0", "scripts": {"check": "node -e \\"process.exit(2)\\""}}')
         + "npm run --silent check", ("npm",), tool="npm-run"),
]
for _i, _case in enumerate(THIRD_CASES):
    THIRD_CASES[_i] = Case(_case.id, _case.label, _case.script, _case.needs, _case.alt, _case.tool,
                           ("jenkins", "github", "azure", "", "gitlab", "travis")[_i % 6])
MORE_CASES += THIRD_CASES
CASES += THIRD_CASES


# The fourth batch (issue 21): tools and wordings the knowledge base was not written for, run
# and measured before anything was tuned on them. Mostly what a bare runner has (the shell, dash,
# make, cmake, as, ld, perl, tclsh, rustc, java, node, python's urllib, git, openssl, valgrind)
# and the project's own venv (hadolint, ruff).
RSA_SIGN = ("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out key.pem 2>/dev/null && "
            "openssl pkey -in key.pem -pubout -out pub.pem && echo 'release 1.4.2' > app.tar && "
            "openssl dgst -sha256 -sign key.pem -out app.tar.sig app.tar && echo tampered >> app.tar && ")
URLLIB = "python3 -c \"import os, urllib.request; urllib.request.urlopen(os.environ['HTTP'] + '{path}', timeout=10)\""
GIT_ID = "git -c user.email=ci@example.com -c user.name=ci"
FOURTH_CASES: list[Case] = [
    # --- TRANSIENT: a server that closes the connection without an answer, in five clients
    Case("curl-empty-reply", "TRANSIENT", 'curl -sS --fail "$HTTP/empty/artifacts/app.tar.gz" -o app.tar.gz', ("curl",)),
    Case("wget-empty-reply", "TRANSIENT", 'wget --tries=1 -O app.tar.gz "$HTTP/empty/artifacts/app.tar.gz"', ("wget",)),
    Case("python-urllib-empty", "TRANSIENT", URLLIB.format(path="/empty/api/v1/builds"), (), tool="python-urllib"),
    Case("node-http-empty", "TRANSIENT", "node -e \"require('http').get(process.env.HTTP + '/empty/registry/app', () => {})"
         ".on('error', (e) => { throw e; })\"", ("node",), tool="node-http"),
    Case("java-http-empty", "TRANSIENT", JAVA_GET + 'java Get "$HTTP/empty/maven2/app.pom"', ("javac",), tool="java-url"),
    # --- RATE_LIMIT and POLICY through a client never seen
    Case("git-fetch-http-429", "RATE_LIMIT", 'git init -q . && git fetch "$HTTP/status/429/org/app.git" main', ("git",),
         tool="git-http"),
    Case("git-deny-delete-current", "POLICY", "git init -q -b main server && " + GIT_ID + " -C server commit -q --allow-empty -m x && "
         "git clone -q server work && cd work && git push origin :main", ("git",), tool="git-receive"),
    # --- INFRA: missing commands, packages, libraries and caches; full disks; memory
    Case("make-missing-command", "INFRA", py("Makefile", "docs:\n\tpandoc -o build/manual.html docs/manual.md\n") + "make docs",
         ("make",), tool="make-recipe"),
    Case("dash-command-not-found", "INFRA", "dash -c 'echo building; frobnicate --all'", ("dash",)),
    Case("cmake-missing-package", "INFRA", py("CMakeLists.txt", "cmake_minimum_required(VERSION 3.10)\nproject(app C)\n"
         "find_package(Frobnicate REQUIRED)\n") + "cmake -S . -B build", ("cmake",), tool="cmake-config"),
    Case("xz-disk-full", "INFRA", "head -c 200000 /dev/urandom > data.bin && xz -c data.bin > /dev/full", ("xz",)),
    Case("jvm-heap-reserve", "INFRA", "ulimit -v 400000; java -Xms2g -version", ("java",), tool="jvm-ulimit"),
    Case("git-unknown-subcommand", "INFRA", "git init -q . && git frobnicate pull", ("git",), tool="git-subcommand"),
    Case("ld-missing-library", "INFRA", py("main.c", "int main(void) { return 0; }\n") + "gcc -o main main.c -lfrobnicate",
         ("gcc",), alt="TYPECHECK", tool="ld"),
    # --- RUNTIME
    Case("valgrind-leak", "RUNTIME", py("main.c", "#include <stdlib.h>\nint main(void) { char *p = malloc(64); p[0] = 1; p = 0; return 0; }\n")
         + "gcc -g -o main main.c && valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 ./main",
         ("valgrind",), tool="valgrind-leak"),
    Case("perl-undefined-method", "RUNTIME", py("job.pl", "use strict;\nmy $cfg;\n$cfg->load('settings.ini');\n") + "perl job.pl",
         ("perl",), tool="perl-strict"),
    Case("tcl-divide-by-zero", "RUNTIME", py("avg.tcl", "proc avg {sum n} { expr {$sum / $n} }\nputs [avg 10 0]\n") + "tclsh avg.tcl",
         ("tclsh",), tool="tclsh-expr"),
    Case("rustc-unwrap-panic", "RUNTIME", py("main.rs", "fn main() {\n    let port: Option<u16> = std::env::args().nth(3).map(|a| a.parse().unwrap());\n"
         "    println!(\"{}\", port.unwrap());\n}\n") + "rustc -o main main.rs && ./main", ("rustc",), tool="rustc-run"),
    Case("java-null-pointer", "RUNTIME", py("App.java", "public class App {\n  static String name() { return System.getenv(\"APP_NAME_UNSET\"); }\n"
         "  public static void main(String[] a) { System.out.println(name().length()); }\n}\n") + "javac App.java && java App",
         ("javac",), tool="java"),
    # --- TYPECHECK: assemblers, shells, build files and awk programs that do not parse
    Case("as-bad-register", "TYPECHECK", "printf '\\t.text\\n\\tmovq %%rax, %%zz\\n' > boot.s && as boot.s -o boot.o", ("as",)),
    Case("dash-syntax-error", "TYPECHECK", py("deploy.sh", "if [ -f app.tar ]; then\n  echo ok\n") + "dash -n deploy.sh",
         ("dash",), tool="dash-n"),
    Case("cmake-parse-error", "TYPECHECK", py("CMakeLists.txt", "cmake_minimum_required(VERSION 3.10\nproject(app C)\n")
         + "cmake -S . -B build", ("cmake",), tool="cmake-parse"),
    Case("awk-syntax-error", "TYPECHECK", "printf 'a 1\\n' | awk '{ total += $2 ' ", ("awk",), tool="awk-syntax"),
    Case("perl-syntax-check", "TYPECHECK", py("job.pl", "use strict;\nmy $total = ;\nprint $total;\n") + "perl -c job.pl",
         ("perl",), tool="perl-c"),
    # --- LINT
    Case("hadolint", "LINT", py("Dockerfile", "FROM ubuntu\nRUN apt-get update && apt-get install curl\nWORKDIR app\n")
         + "hadolint Dockerfile", ("hadolint",)),
    Case("git-diff-check", "LINT", "git init -q . && printf 'a\\n' > app.txt && git add app.txt && " + GIT_ID
         + " commit -qm a && printf 'a  \\nb\\t\\n' > app.txt && git diff --check", ("git",), tool="git-diff-check"),
    # --- SECURITY
    Case("ruff-security", "SECURITY", py("app.py", "import subprocess\n\nPASSWORD = 'hunter2-prod'\n\n\ndef run(cmd):\n"
         "    return subprocess.call(cmd, shell=True)\n") + "ruff check --no-cache --select S app.py", ("ruff",)),
    Case("openssl-bad-signature", "SECURITY", RSA_SIGN + "openssl dgst -sha256 -verify pub.pem -signature app.tar.sig app.tar",
         ("openssl",)),
    Case("md5sum-check", "SECURITY", "echo 'release 1.4.2' > app.tar && md5sum app.tar > app.tar.md5 && echo x >> app.tar && "
         "md5sum -c app.tar.md5", ("md5sum",)),
    # --- TEST_ASSERT
    Case("tcltest-fail", "TEST_ASSERT", py("all.tcl", "package require tcltest\nnamespace import ::tcltest::*\n"
         "proc add {a b} { expr {$a - $b} }\ntest add-1 {adds two numbers} { add 2 3 } 5\n"
         "set failed $::tcltest::numTests(Failed)\ncleanupTests\nexit [expr {$failed > 0}]\n") + "tclsh all.tcl", ("tclsh",),
         tool="tcltest"),
    Case("node-assert", "TEST_ASSERT", "node -e \"require('assert').deepStrictEqual({total: 3, items: 2}, {total: 4, items: 2})\"",
         ("node",), tool="node-assert"),
    Case("rustc-test", "TEST_ASSERT", py("lib.rs", "pub fn add(a: i32, b: i32) -> i32 { a - b }\n#[cfg(test)]\nmod tests {\n"
         "    #[test]\n    fn adds() { assert_eq!(super::add(2, 3), 5); }\n}\n") + "rustc --test -o t lib.rs && ./t",
         ("rustc",), tool="rustc-test"),
    # --- SCHEMA_MIGRATION
    Case("sqlite3-rename-missing-column", "SCHEMA_MIGRATION", "sqlite3 app.db 'CREATE TABLE orders (id INTEGER PRIMARY KEY, total INT);' && "
         + py("0003.sql", "ALTER TABLE orders RENAME COLUMN customer TO customer_id;") + "sqlite3 -bail app.db < 0003.sql", ("sqlite3",)),
    # --- UNKNOWN: nothing in the log says why
    Case("python-exit-silent", "UNKNOWN", "python3 -c \"print('checked 14 files'); raise SystemExit(3)\"", (), tool="python-exit"),
    Case("git-diff-quiet", "UNKNOWN", "git init -q . && printf 'a\\n' > app.txt && git add app.txt && " + GIT_ID
         + " commit -qm a && printf 'b\\n' > app.txt && git diff --quiet", ("git",), tool="git-diff-quiet"),
    Case("node-exit-code", "UNKNOWN", "node -e \"console.log('checking 14 packages'); process.exitCode = 2\"", ("node",), tool="node-exit"),
    Case("expr-zero", "UNKNOWN", "echo 'counting pending jobs' && expr 0 + 0", ("expr",)),
]
for _i, _case in enumerate(FOURTH_CASES):
    FOURTH_CASES[_i] = Case(_case.id, _case.label, _case.script, _case.needs, _case.alt, _case.tool,
                            ("gitlab", "", "travis", "github", "jenkins", "azure")[_i % 6])
MORE_CASES += FOURTH_CASES
CASES += FOURTH_CASES

class _Handler(http.server.BaseHTTPRequestHandler):
    """A local service that answers with the status the path asks for (/status/503...)."""

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if parts[0] == "empty":  # the connection is closed without an answer ("Empty reply from server")
            self.close_connection = True
            return
        if parts[0] == "sleep":
            import time

            time.sleep(float(parts[1]))
        if parts[0] == "index" and len(parts) >= 4:  # /index/<code>/simple/<project>/: a page whose file answers <code>
            name = parts[3].replace("-", "_")
            page = f'<html><body><a href="/status/{parts[1]}/packages/{name}-1.0-py3-none-any.whl">{name}-1.0-py3-none-any.whl</a>'
            self._answer(200, (page + "</body></html>\n").encode(), "text/html")
            return
        code = int(parts[1]) if parts[0] == "status" else 200
        body = {403: b"forbidden: token lacks the packages:write scope\n", 429: b"rate limit exceeded\n",
                502: b"<html><body><h1>502 Bad Gateway</h1></body></html>\n",
                503: b"upstream connect error or disconnect/reset before headers\n"}.get(code, b"ok\n")
        self._answer(code, body, "text/plain", parse_qs(url.query).get("retry_after", ["60"])[0])

    def do_HEAD(self) -> None:  # noqa: N802
        """The same answer without its body (``curl -I``); BaseHTTPRequestHandler answers 501 otherwise."""
        self._head_only = True
        self.do_GET()

    def _answer(self, code: int, body: bytes, content_type: str, retry_after: str = "60") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if code == 429:
            self.send_header("Retry-After", retry_after)
            self.send_header("X-RateLimit-Remaining", "0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if getattr(self, "_head_only", False):
            return
        try:
            self.wfile.write(body)
        except BrokenPipeError:  # the client gave up waiting (the timeout case)
            pass

    def log_message(self, *args: object) -> None:
        pass


# The tool of the first cases, which need nothing beyond Python and the shell.
PLAIN_TOOLS = {"unittest-fail": "unittest", "disk-full-dd": "dd", "command-not-found": "bash",
               "python-memoryerror": "python-memory", "disk-full-python": "python-io"}


def tool_of(case: Case) -> str:
    return case.tool or (case.needs[0] if case.needs else PLAIN_TOOLS.get(case.id, "python"))


def frame(log: bytes, style: str, command: str, code: int) -> bytes:
    """``log`` as a CI runner stores it: its timestamps or prefixes on each line, and the lines it
    writes itself before and after the step (the step's own output is untouched)."""
    lines = log.decode("utf-8", errors="surrogateescape").splitlines()

    def stamp(i: int) -> str:
        return f"2026-12-02T01:{10 + i // 600 % 50:02d}:{i // 10 % 60:02d}.{(i * 7919) % 10_000_000:07d}Z"

    if style == "github":
        out = ["##[group]Run " + command, "##[endgroup]", *lines, f"##[error]Process completed with exit code {code}."]
        out = [f"{stamp(i)} {line}" for i, line in enumerate(out)]
    elif style == "gitlab":
        out = ["\x1b[0KRunning with gitlab-runner 17.5.0 (c2d8d8dd)", "section_start:1764637800:step_script\r\x1b[0K"
               "\x1b[0K\x1b[36;1mExecuting \"step_script\" stage of the job script\x1b[0;m", f"\x1b[32;1m$ {command}\x1b[0;m",
               *lines, "section_end:1764637860:step_script\r\x1b[0K",
               f"\x1b[31;1mERROR: Job failed: exit code {code}\n\x1b[0;m"]
    elif style == "jenkins":
        out = ["[Pipeline] sh", f"+ {command}", *lines, "[Pipeline] }", "[Pipeline] // stage",
               f"ERROR: script returned exit code {code}", "Finished: FAILURE"]
        out = [f"[{stamp(i)[:-5]}Z] {line}" if 1 <= i < len(out) - 1 else line for i, line in enumerate(out)]
    elif style == "azure":
        out = ["##[section]Starting: Run tests", f"Script contents:\n{command}", *lines,
               f"##[error]Bash exited with code '{code}'.", "##[section]Finishing: Run tests"]
        out = [f"{stamp(i)} {line}" for i, line in enumerate(out)]
    elif style == "travis":
        out = ["travis_fold:start:script\r\x1b[0K$ " + command, *lines, "travis_fold:end:script\r\x1b[0K", "",
               f'The command "{command}" exited with {code}.', "", "Done. Your build exited with 1."]
    else:
        return log
    return ("\n".join(out) + "\n").encode("utf-8", errors="surrogateescape")


def _path() -> str:
    extra = [TOOLS_VENV / "bin", SCANNERS_VENV / "bin", NPM_TOOLS / "node_modules" / ".bin", Path("/usr/lib/go/bin")]
    # The project's own venv last (hadolint, ruff): the machine's python3 and tools come first.
    return os.pathsep.join([str(p) for p in extra if p.is_dir()] + [os.environ.get("PATH", ""), str(ROOT / ".venv" / "bin")])


def run_case(case: Case, out_dir: Path, env: dict[str, str]) -> int:
    with tempfile.TemporaryDirectory(prefix="mb-corpus-") as work:
        proc = subprocess.run(["bash", "-c", case.script], cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=300)
    if proc.returncode == 0:
        raise SystemExit(f"case {case.id}: the command succeeded; a failure case must fail")
    # A process killed by signal N reports -N here; a shell (and a step) reports 128 + N.
    code = proc.returncode if proc.returncode > 0 else 128 - proc.returncode
    (out_dir / case.id).mkdir(parents=True, exist_ok=True)
    command = case.script.strip().splitlines()[-1]
    (out_dir / case.id / "fail.log").write_bytes(frame(proc.stdout, case.framing, command, code))
    return code


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
    skipped: list[str] = []
    failed: list[str] = []
    for case in CASES:
        if args.only and case.id not in args.only:
            continue
        missing = [tool for tool in case.needs if shutil.which(tool, path=env["PATH"]) is None]
        if missing:
            skipped.append(f"{case.id} (needs {', '.join(missing)})")
            continue
        try:
            code = run_case(case, args.out, env)
        except (SystemExit, subprocess.TimeoutExpired) as err:
            failed.append(f"{case.id}: {err}")
            continue
        rows[case.id] = {"id": case.id, "class": case.label, "alt_class": case.alt, "exit_code": str(code),
                         "source": f"real {tool_of(case)} output, built by scripts/build_corpus.py"}
        print(f"{case.id:<32} exit {code:<4} {case.label}")
    server.shutdown()
    args.out.mkdir(parents=True, exist_ok=True)
    by_id = {case.id: case for case in CASES}
    for row in rows.values():
        if row["id"] in by_id:
            case = by_id[row["id"]]
            row["tool"], row["framing"] = tool_of(case), case.framing
            row["set"] = "widened" if case in MORE_CASES else "dev"
            row["source"] = f"real {tool_of(case)} output, built by scripts/build_corpus.py"
    with labels_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "class", "alt_class", "exit_code", "tool", "framing", "set", "source"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows[k] for k in sorted(rows))
    if skipped:
        print("skipped (tool not installed):\n  " + "\n  ".join(skipped), file=sys.stderr)
    if failed:
        print("failed to produce a failure log:\n  " + "\n  ".join(failed), file=sys.stderr)


if __name__ == "__main__":
    main()
