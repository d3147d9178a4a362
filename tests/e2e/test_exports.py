"""canaryctl export prometheus-rules | grafana-dashboard (SPEC 8, docs/metrics.md
"Exports"): the rules pass promtool, load into a real Prometheus that scrapes a real
canaryd, and the rollback alert fires; every dashboard panel's PromQL returns data
from that Prometheus after a rollout under load."""
import json
import os
import shutil
import subprocess
import urllib.parse

import pytest

from conftest import (ADMIN_TOKEN, READ_TOKEN, bin_path, free_port, http, http_json,
                      wait_until)
from test_rollout import Load, esc

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
EVAL_TOKEN = "e2e-eval-secret"


def ctl(*args):
    p = subprocess.run([bin_path("canaryctl"), *args], capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout, p.stderr


def rules_text():
    rc, out, err = ctl("export", "prometheus-rules")
    assert rc == 0, err
    return out


def dashboard(*args):
    rc, out, err = ctl("export", "grafana-dashboard", *args)
    assert rc == 0, err
    return json.loads(out)


def test_rules_pass_promtool(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text(rules_text())
    p = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 9 rules found" in p.stdout, p.stdout
    text = path.read_text()
    for alert in ("CanarydRollback", "CanarydAwaitingApproval", "CanarydPausedForReview",
                  "CanarydCheckFailing", "CanarydNoEvidence", "CanarydFleetNodeLagging",
                  "CanarydStoreUnavailable", "CanarydSlowMitigation"):
        assert f"alert: {alert}\n" in text, alert
    assert text.count("severity: critical") >= 3 and text.count("severity: warning") >= 4
    assert text.count("        for: ") == 9
    rc, out, _ = ctl("export", "prometheus-rules", "--mitigate-bound", "2.5")
    assert rc == 0 and "canaryd_time_to_mitigate_seconds > 2.5" in out


def test_export_usage_errors():
    assert ctl("export")[0] == 2
    assert ctl("export", "nonsense")[0] == 2
    assert ctl("export", "prometheus-rules", "--mitigate-bound", "-1")[0] == 2
    assert ctl("export", "grafana-dashboard", "--service", "../x")[0] == 2


def test_dashboard_json_shape():
    d = dashboard()
    assert d["schemaVersion"] == 39 and d["uid"] == "canaryd" and d["title"]
    names = [v["name"] for v in d["templating"]["list"]]
    assert names == ["datasource", "service"]
    assert d["templating"]["list"][0]["type"] == "datasource"
    assert d["templating"]["list"][0]["query"] == "prometheus"
    titles = [p["title"] for p in d["panels"]]
    for want in ("Request rate", "Error rate", "p50", "p99", "weight", "Rollout state",
                 "verdicts", "Flag evaluations", "Time to detect", "Time to mitigate"):
        assert any(want in t for t in titles), (want, titles)
    ids = set()
    for p in d["panels"]:
        assert p["id"] not in ids
        ids.add(p["id"])
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert set(p["gridPos"]) == {"h", "w", "x", "y"}
        assert isinstance(p["fieldConfig"]["overrides"], list)
        assert len(p["targets"]) == 1 and p["targets"][0]["expr"]
        assert p["targets"][0]["datasource"]["uid"] == "${datasource}"
    one = dashboard("--service", "web")
    assert one["uid"] == "canaryd-web"
    svc = one["templating"]["list"][1]
    assert svc["type"] == "constant" and svc["query"] == "web"


CONFIG = """admin:
  listen: 127.0.0.1:{admin_port}
  tokens:
    - {name: ops, secret: "%(admin)s", scopes: [admin]}
    - {name: viewer, secret: "%(read)s", scopes: [read]}
    - {name: app, secret: "%(eval)s", scopes: [evaluate]}
store: sqlite:{workdir}/canaryd.db
workers: 1
listeners:
  - name: public
    listen: 127.0.0.1:%(proxy)d
    routes:
      - match: {path_prefix: /}
        service: web
services:
  web:
    versions:
      v1: {endpoints: [127.0.0.1:%(v1)d]}
      v2: {endpoints: [127.0.0.1:%(v2)d]}
    stable: v1
    sticky: header:x-user-id
    drain: 1s
flags:
  checkout:
    rollout: {"on": 50}
rollouts:
  web-v2:
    target: {service: web, canary: v2}
    steps:
      - weight: 20
        for: 20s
      - weight: 100
    analysis:
      interval: 1s
      checks:
        - name: errors
          metric: error_rate
          max_increase: 0.05
          min_samples: 30
          on_fail: rollback
        - name: latency
          metric: latency_p99
          max: 1000
          min_samples: 30
          on_fail: rollback
    rollback:
      drain: 1s
"""


def start_prometheus(procs, tmp_path, admin_port, rules):
    port = free_port()
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "token").write_text(READ_TOKEN)
    (tmp_path / "prometheus.yml").write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{tmp_path}/rules.yml]
scrape_configs:
  - job_name: canaryd
    metrics_path: /metrics
    authorization:
      credentials_file: {tmp_path}/token
    static_configs:
      - targets: ["127.0.0.1:{admin_port}"]
""")
    procs([PROMETHEUS, f"--config.file={tmp_path}/prometheus.yml",
           f"--storage.tsdb.path={tmp_path}/tsdb", f"--web.listen-address=127.0.0.1:{port}"],
          name="prometheus")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http("GET", url + "/-/ready", timeout=0.5)[0] == 200, 30,
               0.2, what="prometheus ready")
    return url


def prom_query(url, expr):
    st, doc = http_json("GET", url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert st == 200, (expr, doc)
    return doc["data"]["result"]


def panel_expr(expr):
    return expr.replace("$__rate_interval", "1m").replace("$service", ".*")


def test_rules_fire_and_panels_have_data(canaryd, upstream, procs, tmp_path):
    v1 = upstream("v1")
    v2 = upstream("v2", error_rate=0.5, seed=3)  # bad: the error check rolls it back
    proxy = free_port()
    text = CONFIG % {"admin": ADMIN_TOKEN, "read": READ_TOKEN, "eval": EVAL_TOKEN,
                     "proxy": proxy, "v1": v1, "v2": v2}
    d = canaryd(esc(text), header=False)
    prom = start_prometheus(procs, tmp_path, d.admin_port, rules_text())
    wait_until(lambda: prom_query(prom, 'up{job="canaryd"} == 1'), 30, 0.2,
               what="prometheus scraping canaryd")
    load = Load(procs, proxy, rate=200)
    for i in range(20):
        st, doc = d.post("/ofrep/v1/evaluate/flags/checkout",
                         {"context": {"targetingKey": f"user-{i}"}}, token=EVAL_TOKEN)
        assert st == 200, doc
    st, doc = d.post("/v1/rollouts/web-v2/start")
    assert st == 200, doc

    def rolled_back():
        st, r = d.get("/v1/rollouts/web-v2")
        return r["state"] in ("rolled_back", "failed") and r

    r = wait_until(rolled_back, 60, 0.2, what="web-v2 rolled back")
    assert r["state"] == "rolled_back", r

    def firing():
        st, doc = http_json("GET", prom + "/api/v1/alerts")
        assert st == 200, doc
        return [a for a in doc["data"]["alerts"]
                if a["labels"]["alertname"] == "CanarydRollback" and a["state"] == "firing"]

    alerts = wait_until(firing, 60, 0.5, what="CanarydRollback firing")
    assert alerts[0]["labels"]["rollout"] == "web-v2"
    assert alerts[0]["labels"]["severity"] == "critical"
    assert alerts[0]["labels"]["reason"] == "check"

    # every panel's query answers with data from this Prometheus
    d2 = dashboard()
    missing = {}

    def all_panels():
        missing.clear()
        for p in d2["panels"]:
            if not prom_query(prom, panel_expr(p["targets"][0]["expr"])):
                missing[p["title"]] = p["targets"][0]["expr"]
        return not missing

    try:
        wait_until(all_panels, 30, 1.0, what="every panel has data")
    except AssertionError:
        raise AssertionError(f"panels without data: {missing}")
    load.stop()


def test_store_and_waiting_metrics(canaryd, upstream):
    """canaryd_store_up and canaryd_rollout_waiting, which the rules use, are exported."""
    v1, v2 = upstream("v1"), upstream("v2")
    text = CONFIG % {"admin": ADMIN_TOKEN, "read": READ_TOKEN, "eval": EVAL_TOKEN,
                     "proxy": free_port(), "v1": v1, "v2": v2}
    text = text.replace("      - weight: 20\n        for: 20s\n",
                        "      - weight: 20\n        for: 20s\n"
                        "      - approval: {required: [ops]}\n")
    d = canaryd(esc(text), header=False)
    st, _, body = http("GET", d.url + "/metrics", token=READ_TOKEN)
    assert st == 200
    body = body.decode()
    assert "canaryd_store_up 1\n" in body
    assert 'canaryd_rollout_waiting{rollout="web-v2",reason="approval"} 0\n' in body
    assert d.post("/v1/rollouts/web-v2/start")[0] == 200
    assert d.post("/v1/rollouts/web-v2/promote")[0] == 200  # to the approval step

    def waiting():
        b = http("GET", d.url + "/metrics", token=READ_TOKEN)[2].decode()
        return 'canaryd_rollout_waiting{rollout="web-v2",reason="approval"} 1\n' in b

    wait_until(waiting, 10, 0.1, what="waiting for approval in /metrics")
