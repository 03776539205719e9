"""What generalizes beyond the tools the patterns were written for: cross-tool cues, the learned
fallback and its calibration, leave-tools-out folds; and what must stay UNKNOWN."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from metabuilder.domain.classifier import classify
from metabuilder.domain.crossval import leave_tools_out, read, without_tools
from metabuilder.domain.evaluation import choose_threshold, expected_calibration_error, read_corpus, tool_folds
from metabuilder.domain.knowledge import bundled_knowledge_base
from metabuilder.domain.learned import BUNDLED_MODEL, Model, bundled_model, features, train
from metabuilder.domain.taxonomy import FailureType

OWN = Path(__file__).resolve().parents[1] / "corpus" / "own"
KB = bundled_knowledge_base()


@pytest.mark.parametrize(("text", "expected"), [
    # issue 13: pip-licenses' own --fail-on message
    ("fail-on license AGPL-3.0-only was found for package pdfmagic:0.9.1", FailureType.POLICY),
    ("ERROR: package left-pad@1.3.0 uses license WTFPL, which is on the deny list", FailureType.POLICY),
    ("push to refs/heads/main rejected by the branch protection rule", FailureType.POLICY),
    ("3 secrets found in the working tree (aws access key, slack token)", FailureType.SECURITY),
    ("django 3.2.1 is affected by CVE-2023-31047", FailureType.SECURITY),
    ("error: could not resolve dependency tree for package frobnicate", FailureType.INFRA),
    ("Error: you have exceeded your request quota, please slow down", FailureType.RATE_LIMIT),
])
def test_refusals_findings_and_answers_are_read_by_meaning_not_by_tool(text, expected):
    kb = without_tools(KB, {"pip-licenses", "gitleaks", "npm", "license", "secrets", "audit"})
    signal = classify(text + "\n", exit_code=1, kb=kb, learned=False)
    assert signal.type is expected, signal
    assert any(p.startswith("cue.") for p in signal.patterns)


@pytest.mark.parametrize("log", [
    b"", b"\n\n", b"Run started\n", b"+ make build\n", b"Collecting requests\n  Downloading requests-2.31.0.whl\n",
    b"2026-11-21T10:00:00.1Z ##[group]Run actions/checkout@v4\n2026-11-21T10:00:01.1Z ##[endgroup]\n",
])
def test_truncated_and_uninformative_logs_stay_unknown(log):
    assert classify(log, exit_code=1).type is FailureType.UNKNOWN


def test_the_shipped_model_loads_and_abstains_on_thin_windows():
    model = bundled_model()
    assert model is not None and 0 < model.threshold < 1 and model.temperature > 0
    assert not model.predict(features(["ok"])).answered


def test_training_is_deterministic_whatever_the_order():
    reads = read(read_corpus(OWN), KB)
    examples = [(r.feats, r.item.label) for r in reads]
    shuffled = examples[:]
    random.Random(3).shuffle(shuffled)
    assert train(examples).to_json() == train(shuffled).to_json()
    round_trip = Model.from_json(train(examples).to_json())
    assert round_trip.predict(examples[0][0]).label is train(examples).predict(examples[0][0]).label


def test_the_model_file_is_what_the_training_command_builds():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = Path(__file__).parent / "__rebuilt_model.json"
    try:
        subprocess.run([sys.executable, "scripts/train_classifier.py", "--out", str(out)], cwd=root, check=True,
                       capture_output=True, timeout=300)
        assert out.read_text() == BUNDLED_MODEL.read_text(), "rebuild it: python scripts/train_classifier.py"
    finally:
        out.unlink(missing_ok=True)


def test_folds_hold_each_tool_once_and_the_fold_never_sees_its_tools():
    corpus = read_corpus(OWN)
    folds = tool_folds(corpus, 5)
    tools = [t for fold in folds for t in fold]
    assert sorted(tools) == sorted({i.tool for i in corpus})
    kb = without_tools(KB, {"pytest", "cargo"})
    assert not [e.id for e in kb.entries if e.id.split(".")[0] in ("pytest", "cargo", "rust")]
    assert any(e.id.startswith("cue.") for e in kb.entries)


def test_leave_tools_out_is_lower_than_plain_and_reports_calibration():
    corpus = read_corpus(OWN)
    held = leave_tools_out(corpus, KB, folds=3)
    assert len(held.combined.pairs) == len(corpus)
    assert held.combined.macro_f1() < 1.0  # the plain figure on this corpus is 1.0: folds are harder
    assert 0 <= held.combined.ece() <= 1
    assert held.threshold in [round(0.2 + 0.05 * i, 2) for i in range(15)]


def test_a_flat_curve_does_not_pick_its_noise():
    curve = {0.3: 0.940, 0.4: 0.950, 0.5: 0.947, 0.9: 0.930}
    heads = {0.3: 0.60, 0.4: 0.70, 0.5: 0.75, 0.9: 0.90}
    assert choose_threshold(curve, curve.__getitem__) == 0.5  # within 0.005 of the best: the safer one
    assert choose_threshold(curve, curve.__getitem__, tolerance=0.0) == 0.4
    # Of the near-best, the tie-break (truncated heads left UNKNOWN) decides; 0.9 is not near.
    assert choose_threshold(curve, curve.__getitem__, tiebreak=heads.__getitem__) == 0.5
    assert choose_threshold(curve, curve.__getitem__, tiebreak={0.3: 0, 0.4: 1, 0.5: 0, 0.9: 1}.__getitem__) == 0.4


def test_expected_calibration_error():
    assert expected_calibration_error([(0.9, True)] * 9 + [(0.9, False)]) == pytest.approx(0.0)
    assert expected_calibration_error([(1.0, False)] * 4) == pytest.approx(1.0)
    assert expected_calibration_error([(0.75, True), (0.75, False)]) == pytest.approx(0.25)


@pytest.mark.parametrize(("text", "expected"), [
    # HTTP statuses in the words of clients nobody wrote an entry for (issue 21's widening)
    ("  ERROR: HTTP error 503 while getting http://127.0.0.1:8080/packages/left_pad-1.0-py3-none-any.whl",
     FailureType.TRANSIENT),
    ("urllib.error.HTTPError: HTTP Error 403: Forbidden", FailureType.POLICY),
    ("Exception in thread \"main\" java.io.IOException: Server returned HTTP response code: 429 for URL: "
     "http://127.0.0.1:8080/app.pom", FailureType.RATE_LIMIT),
    ("request failed: HTTP/1.0 429 Too Many Requests", FailureType.RATE_LIMIT),
    ("Unable to download data from http://127.0.0.1:8080/ - bad response Service Unavailable 503",
     FailureType.TRANSIENT),
])
def test_http_statuses_are_read_in_any_clients_words(text, expected):
    kb = without_tools(KB, {"pip", "python", "java", "ruby", "tcl"})
    assert classify(text + "\n", exit_code=1, kb=kb, learned=False).type is expected


@pytest.mark.parametrize(("text", "expected"), [
    ("main.c:5:20: error: use of undeclared identifier 'pending_orders'", FailureType.TYPECHECK),
    ("build.sh:3:1: E003 Indent not multiple of 4\nbuild.sh:3:1: E001 Trailing Whitespace", FailureType.LINT),
    ("run.sh:2:4: note: Double quote to prevent globbing and word splitting. [SC2086]", FailureType.LINT),
    ("not ok 1 adds\n# (in test file calc.bats, line 3)\nok 2 passes", FailureType.TEST_ASSERT),
    ("Failing Scenarios:\ncucumber features/login.feature:2 # Scenario: wrong password\n1 scenario (1 failed)",
     FailureType.TEST_ASSERT),
    ("app.py:5:1: S602 subprocess call with shell=True identified, security issue.", FailureType.SECURITY),
    ("gpg: BAD signature from \"Release Bot <release@example.com>\" [ultimate]", FailureType.SECURITY),
    (" ! [remote rejected] HEAD -> main (non-fast-forward)\nerror: failed to push some refs", FailureType.POLICY),
    ("lua5.4: not enough memory", FailureType.INFRA),
    ("tar: mnt/backup.tar: Wrote only 4096 of 10240 bytes", FailureType.INFRA),
    ("awk: cmd. line:1: (FILENAME=data.txt FNR=1) fatal: division by zero attempted", FailureType.RUNTIME),
])
def test_findings_errors_and_summaries_are_read_by_their_shape(text, expected):
    # The knowledge base without any tool's own entries: only what is written for no tool.
    generic = {"cue", "net", "http", "disk", "memory", "anchor", "retry-after", "policy", "rate-limit", "quota"}
    kb = type(KB)(tuple(e for e in KB.entries if e.id.split(".", 1)[0] in generic))
    assert classify(text + "\n", exit_code=1, kb=kb, learned=False).type is expected


@pytest.mark.parametrize(("log", "exit_code", "expected"), [
    # Migration state errors win over the traceback or the exception that carries them.
    (b"Traceback (most recent call last):\n  File \"manage.py\", line 22, in <module>\n"
     b"django.db.migrations.exceptions.InconsistentMigrationHistory: Migration shop.0002_noop is applied before "
     b"its dependency shop.0001_initial on database 'default'.\n", 1, FailureType.SCHEMA_MIGRATION),
    (b"CommandError: Conflicting migrations detected; multiple leaf nodes in the migration graph\n", 1,
     FailureType.SCHEMA_MIGRATION),
    (b"FAILED: Multiple head revisions are present for given argument 'head'\n", 255, FailureType.SCHEMA_MIGRATION),
    # Commands and targets that do not exist, and a daemon that is down, are the machine.
    (b"make: pandoc: No such file or directory\nmake: *** [Makefile:2: docs] Error 127\n", 2, FailureType.INFRA),
    (b"dash: 1: frobnicate: not found\n", 127, FailureType.INFRA),
    (b"make: *** No rule to make target 'build', needed by 'all'.  Stop.\n", 2, FailureType.INFRA),
    (b"Cannot connect to the Podman daemon at unix:///run/podman.sock. Is the podman daemon running?\n", 1,
     FailureType.INFRA),
    # A server that closes the connection without answering is a blip.
    (b"curl: (52) Empty reply from server\n", 52, FailureType.TRANSIENT),
    (b"java.net.SocketException: Unexpected end of file from server\n", 1, FailureType.TRANSIENT),
    # Quota answers, denials and crash signatures in a cloud's or a runtime's words.
    (b"An error occurred (ThrottlingException) when calling the DescribeStacks operation: Rate exceeded\n", 254,
     FailureType.RATE_LIMIT),
    (b"An error occurred (AccessDenied) when calling the PutObject operation: User is not authorized to perform "
     b"s3:PutObject\n", 1, FailureType.POLICY),
    (b"Fatal signal 11 (SIGSEGV) in worker thread\n", 1, FailureType.RUNTIME),
    # Quality gates, rewriting formatters and commit rules.
    (b"---- RESULT: FAILED (minimum: 80.0%, actual: 42.0%) ----\n", 1, FailureType.LINT),
    (b"Rewriting src/app.py\n", 1, FailureType.LINT),
    (b"subject may not be empty [subject-empty]\n", 1, FailureType.POLICY),
    (b"test result: FAILED. 0 passed; 1 failed; 0 ignored\n", 101, FailureType.TEST_ASSERT),
])
def test_states_absences_and_answers_are_read_by_meaning(log, exit_code, expected):
    kb = without_tools(KB, {"django-admin", "alembic", "make", "docker", "curl", "java", "aws", "cargo", "python"})
    signal = classify(log, exit_code=exit_code, kb=kb, learned=False)
    assert signal.type is expected, signal
    assert any(p.startswith(("cue.", "net.")) for p in signal.patterns), signal.patterns


@pytest.mark.parametrize(("log", "expected"), [
    # issue 21's fifth round: wordings of other tools than the logs the cues were read from.
    (b"fatal error: runtime: out of memory\n\ngoroutine 1 [running]:\npanic: oops\n", FailureType.INFRA),
    (b"Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space\n", FailureType.INFRA),
    (b"app.rb:2:in `total': undefined method `sum' for nil:NilClass (NoMethodError)\n", FailureType.RUNTIME),
    (b"TypeError: client.run is not a function\n    at main (/app/index.js:3:10)\n", FailureType.RUNTIME),
    (b"PHP Fatal error:  Uncaught Error: Call to undefined method Job::run() in /app/job.php:3\n",
     FailureType.RUNTIME),
    (b"AttributeError: 'Job' object has no attribute 'run'\n", FailureType.RUNTIME),
    (b"config/deploy.env:3: -----BEGIN RSA PRIVATE KEY-----\n", FailureType.SECURITY),
    (b"settings.py:4 AWS_ACCESS_KEY_ID = AKIAABCDEFGHIJKLMNOP\n", FailureType.SECURITY),
    (b"  db/migrate/20260101120000_add_email.rb\nYou have 1 pending migration\n", FailureType.SCHEMA_MIGRATION),
    (b"src/server.go:12:2: should omit type int from declaration (ST1023)\n", FailureType.LINT),
    (b"src/lib.cc:4:  Add #include <string> for string  [build/include_what_you_use] [4]\n", FailureType.LINT),
    (b"lib/app.py:handler:12: DAR201: - return\n", FailureType.LINT),
    (b"AssertionError [ERR_ASSERTION]: Expected values to be strictly equal\n", FailureType.TEST_ASSERT),
    (b"Tests finished: 2 failed, 5 passed in 1.2s\n", FailureType.TEST_ASSERT),
    (b"Test Suites: 1 failed, 1 total\n", FailureType.TEST_ASSERT),
    (b"[  FAILED  ] CalcTest.Adds (0 ms)\n", FailureType.TEST_ASSERT),
    (b"  1 failing\n", FailureType.TEST_ASSERT),
    # Credentials refused, and a licence id with a dot in it.
    (b"unauthorized: authentication required\n", FailureType.POLICY),
    (b"gh: Bad credentials (HTTP 401)\n", FailureType.POLICY),
    (b"fatal: Authentication failed for 'https://git.example.com/acme/app.git/'\n", FailureType.POLICY),
    (b"! [remote rejected] main (refusing to allow a token to update workflow `ci.yml` without `workflow` scope)\n",
     FailureType.POLICY),
    (b"ERROR: License 'GPL-3.0' of dependency foo is not allowed\n", FailureType.POLICY),
    (b"WRN leaks found: 2\n", FailureType.SECURITY),
])
def test_memory_missing_members_credentials_and_shapes_are_read_by_meaning(log, expected):
    generic = {"cue", "net", "http", "disk", "memory", "anchor", "retry-after", "policy", "rate-limit", "quota"}
    kb = type(KB)(tuple(e for e in KB.entries if e.id.split(".", 1)[0] in generic))
    signal = classify(log, exit_code=1, kb=kb, learned=False)
    assert signal.type is expected, signal


def test_a_security_finding_in_a_linters_format_is_security():
    log = b"app.py:5:1: S602 subprocess call with shell=True identified, security issue.\n"
    assert classify(log, exit_code=1, learned=False).type is FailureType.SECURITY


def test_a_window_of_ci_framing_and_the_command_alone_gets_no_model_answer():
    from metabuilder.domain.learned import informative

    framing = ["[Pipeline] sh", "+ git init -q . && git add app.txt && git commit -qm a && git diff --quiet",
               "[Pipeline] }", "[Pipeline] // stage", "ERROR: script returned exit code 1", "Finished: FAILURE"]
    assert len(features(framing)) >= 6 and not informative(framing)
    assert informative([*framing, "error: pathspec 'app.txt' did not match any file(s) known to git"])
    log = ("\n".join(f"[2026-12-02T01:10:00.00{i}Z] {line}" for i, line in enumerate(framing)) + "\n").encode()
    assert classify(log, exit_code=1).type is FailureType.UNKNOWN
