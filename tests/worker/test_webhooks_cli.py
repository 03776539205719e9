"""``metabuilder webhooks``: add (the secret shown once), list, the delivery log, delete; each
change audited; bad input is one line naming the field, exit status 2."""

from __future__ import annotations

import json

from tests.worker.test_cli import env, metabuilder  # noqa: F401 - the env fixture


def test_webhooks_are_managed_and_audited_from_the_cli(env: dict[str, str]) -> None:  # noqa: F811
    assert metabuilder("tenants", "create", "acme", env=env).returncode == 0
    added = metabuilder("webhooks", "add", "--tenant", "acme", "--url", "https://hooks.example/mb", "--format",
                        "slack", "--events", "gate.opened,run.failed", "--json", env=env)
    assert added.returncode == 0, added.stderr
    hook = json.loads(added.stdout)
    assert (hook["url"], hook["format"], hook["events"]) == ("https://hooks.example/mb", "slack",
                                                             ["gate.opened", "run.failed"])
    assert len(hook["secret"]) >= 32
    listed = json.loads(metabuilder("webhooks", "list", "--tenant", "acme", "--json", env=env).stdout)
    assert [(w["id"], w["secret"]) for w in listed] == [(hook["id"], None)]  # never listed again

    bad = metabuilder("webhooks", "add", "--tenant", "acme", "--url", "hooks.example", env=env)
    assert bad.returncode == 2 and "webhook.url: 'hooks.example' is not an http:// or https:// URL" in bad.stderr
    assert "Traceback" not in bad.stderr
    unknown = metabuilder("webhooks", "delete", "--tenant", "acme", "--id", "wh-nope", env=env)
    assert unknown.returncode != 0 and "unknown webhook 'wh-nope'" in unknown.stderr

    assert metabuilder("webhooks", "delete", "--tenant", "acme", "--id", hook["id"], env=env).returncode == 0
    exported = metabuilder("audit", "export", "--tenant", "acme", env=env).stdout
    events = [json.loads(line) for line in exported.splitlines()]
    changes = [(e["event"], e["target"]) for e in events if e["event"].startswith("webhook.")]
    assert changes == [("webhook.created", f"webhook:{hook['id']}"), ("webhook.deleted", f"webhook:{hook['id']}")]
    assert hook["secret"] not in json.dumps(events)
