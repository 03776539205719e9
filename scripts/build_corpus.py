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
    extra = [TOOLS_VENV / "bin", NPM_TOOLS / "node_modules" / ".bin", Path("/usr/lib/go/bin")]
    return os.pathsep.join([str(p) for p in extra if p.is_dir()] + [os.environ.get("PATH", "")])


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
