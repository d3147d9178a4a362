// canaryd dashboard: sign-in, Overview, Rollout, Flag and Events pages.
// Everything shown goes through htm/Preact, which escapes all text.
import { h, render } from "preact";
import { useState, useEffect, useRef, useCallback } from "preact/hooks";
import htm from "htm";
import uPlot from "uplot";
import { api, token, setToken, eventStream } from "./api.js";

const html = htm.bind(h);

// ---- helpers ---------------------------------------------------------------

const has = (me, scope) => !!me && (me.scopes.includes("admin") || me.scopes.includes(scope));
const pct = (v) => (v === null || v === undefined || Number.isNaN(v) ? "–" : (v * 100).toFixed(2) + "%");
const num = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const when = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "–");
// A duration in ms as "90s", "15m", "2h", "3d".
function dur(ms) {
  const s = Math.round(ms / 1000);
  if (s < 120) return s + "s";
  if (s < 7200) return Math.round(s / 60) + "m";
  if (s < 172800) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}
function left(ms) {
  if (!ms) return "";
  const s = Math.round((ms - Date.now()) / 1000);
  return s <= 0 ? "now" : s < 120 ? s + "s" : Math.round(s / 60) + "m";
}

function route() {
  const p = (location.hash || "#/").slice(1).split("/").filter(Boolean).map(decodeURIComponent);
  return p.length ? p : ["overview"];
}

// Loads fn() now, again whenever `dep` changes and every `every` ms.
function useLoad(fn, deps, every = 0) {
  const [state, set] = useState({ data: null, error: null });
  const f = useCallback(fn, deps);
  useEffect(() => {
    let live = true;
    const run = () =>
      f().then(
        (data) => live && set({ data, error: null }),
        (error) => live && set((s) => ({ data: s.data, error })),
      );
    run();
    const t = every ? setInterval(run, every) : null;
    return () => {
      live = false;
      if (t) clearInterval(t);
    };
  }, [f, every]);
  return state;
}

// A control button that asks first, then shows the answer (or the refusal).
function Action({ label, confirm: question, run, id, danger }) {
  const [msg, setMsg] = useState(null);
  const [ask, setAsk] = useState(false);
  const go = async () => {
    setAsk(false);
    try {
      const r = await run();
      setMsg({ ok: true, text: (r && r.message) || label + ": done" });
    } catch (e) {
      setMsg({ ok: false, text: `${e.status || ""} ${e.message}` });
    }
  };
  return html`<span class="action">
    ${ask
      ? html`<span class="confirm" role="dialog"
          >${question}
          <button data-testid=${"confirm-" + id} class="danger" onClick=${go}>Confirm</button>
          <button onClick=${() => setAsk(false)}>Cancel</button></span
        >`
      : html`<button data-testid=${"btn-" + id} class=${danger ? "danger" : ""} onClick=${() => setAsk(true)}>
          ${label}
        </button>`}
    ${msg && html`<span class=${msg.ok ? "ok" : "err"} data-testid=${"msg-" + id}>${msg.text}</span>`}
  </span>`;
}

function Err({ error }) {
  return error ? html`<p class="err">${error.status || ""} ${error.message}</p>` : null;
}

// ---- sign-in ---------------------------------------------------------------

function SignIn({ onIn }) {
  const [t, setT] = useState("");
  const [err, setErr] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    try {
      const me = await api("/v1/whoami", { tok: t });
      setToken(t);
      onIn(me);
    } catch (x) {
      setErr(x.status === 401 ? "That token is not valid." : x.message);
    }
  };
  return html`<form class="signin" onSubmit=${submit}>
    <h1>canaryd</h1>
    <label>API token <input id="token" type="password" autocomplete="off" value=${t}
      onInput=${(e) => setT(e.target.value)} /></label>
    <button id="signin" type="submit">Sign in</button>
    ${err && html`<p class="err">${err}</p>`}
    <p class="hint">The token stays in this tab only (sessionStorage) and is sent as
      <code>Authorization: Bearer</code>; closing the tab signs you out.</p>
  </form>`;
}

// ---- overview --------------------------------------------------------------

function Overview({ tick }) {
  const svc = useLoad(() => api("/v1/services"), [tick], 2000);
  const ro = useLoad(() => api("/v1/rollouts"), [tick], 2000);
  const fl = useLoad(() => api("/v1/feature-flags"), [tick]);
  const fleet = useLoad(() => api("/v1/fleet").catch(() => null), [tick], 5000);
  const rollouts = (ro.data && (ro.data.rollouts || ro.data)) || [];
  return html`<section>
    <h2>Services</h2>
    <${Err} error=${svc.error} />
    <table data-testid="services">
      <tr><th>service</th><th>stable</th><th>canary</th><th>weight</th><th>owner</th>
        <th>cohort</th><th>requests</th><th>error rate</th><th>p99 ms</th></tr>
      ${((svc.data && svc.data.services) || []).map((s) => {
        const cs = Object.entries(s.cohorts || {});
        return cs.length
          ? cs.map(([k, c], i) => html`<tr>
              ${i === 0
                ? html`<td rowspan=${cs.length}>${s.name}</td><td rowspan=${cs.length}>${s.stable}</td>
                  <td rowspan=${cs.length}>${s.canary || "–"}</td><td rowspan=${cs.length}>${s.weight}%</td>
                  <td rowspan=${cs.length}>${s.owner || "–"}</td>`
                : null}
              <td>${k}</td><td>${c.requests}</td><td>${pct(c.error_rate)}</td>
              <td>${num(c.latency && c.latency.p99_ms)}</td></tr>`)
          : html`<tr><td>${s.name}</td><td>${s.stable}</td><td>${s.canary || "–"}</td>
              <td>${s.weight}%</td><td>${s.owner || "–"}</td><td colspan="4">no traffic yet</td></tr>`;
      })}
    </table>
    <h2>Rollouts</h2>
    <${Err} error=${ro.error} />
    <table data-testid="rollouts">
      <tr><th>rollout</th><th>state</th><th>step</th><th>progress</th><th>next gate</th></tr>
      ${rollouts.map((r) => html`<tr>
        <td><a href=${"#/rollout/" + encodeURIComponent(r.name)}>${r.name}</a></td>
        <td class=${"state " + r.state} data-testid=${"state-" + r.name}>${r.state}</td>
        <td>${Math.min(r.step.index + 1, r.step.of)} of ${r.step.of} (${r.step.name ? r.step.name + ", " : ""}${r.step.kind})</td>
        <td><progress max=${r.step.of} value=${Math.min(r.step.index, r.step.of)}></progress></td>
        <td>${gateText(r)}</td></tr>`)}
    </table>
    <h2>Feature flags</h2>
    <${Err} error=${fl.error} />
    <table data-testid="flags">
      <tr><th>flag</th><th>enabled</th><th>percentage</th><th>excluded</th><th>source</th></tr>
      ${((fl.data && fl.data.flags) || []).map((f) => html`<tr>
        <td><a href=${"#/flag/" + encodeURIComponent(f.key)}>${f.key}</a></td>
        <td>${f.enabled ? "yes" : "no"}</td><td>${f.percentage}%</td>
        <td>${(f.exclude || []).length}</td><td>${f.source}</td></tr>`)}
    </table>
    ${fleet.data && fleet.data.nodes && fleet.data.nodes.length
      ? html`<h2>Fleet</h2><table data-testid="fleet">
          <tr><th>node</th><th>role</th><th>term</th><th>applied revision</th><th>last seen</th></tr>
          ${fleet.data.nodes.map((n) => html`<tr><td>${n.node || n.name || n.id}</td>
            <td>${n.role || (n.leader ? "leader" : "follower")}</td><td>${n.term}</td>
            <td>${n.applied_revision}</td><td>${n.last_seen}</td></tr>`)}
        </table>`
      : null}
  </section>`;
}

const clip = (s) => (s && s.length > 300 ? s.slice(0, 300) + "…" : s);

// One plan step as text: "set web 5%", "shadow 100%", "approval by vp, sre", "pause 1m".
function planText(p) {
  if (!p) return "";
  let t = (p.name ? p.name + ": " : "") + p.kind;
  if (p.weights) t += " " + Object.entries(p.weights).map(([k, v]) => `${k} ${v}%`).join(", ");
  if (p.shadow_percent !== undefined) t += ` ${p.shadow_percent}%`;
  if (p.approvers) t += " by " + p.approvers.join(", ");
  if (p.pause_ms) t += " " + dur(p.pause_ms);
  if (p.for_ms) t += ", for " + dur(p.for_ms);
  if (p.gated) t += ", gated";
  return t;
}

function gateText(r) {
  const s = r.step;
  if (r.state === "paused") return "paused: " + (r.pause_reason || "");
  if (s.approvals) {
    const missing = s.approvals.required.filter((n) => !s.approvals.approved.includes(n));
    if (missing.length) return "approval from " + missing.join(", ");
  }
  if (s.waiting_for) return s.waiting_for;
  if (s.gate_at) return "gate in " + left(s.gate_at);
  if (r.bake) return "baking until " + when(r.bake.until);
  return "–";
}

// ---- rollout ---------------------------------------------------------------

function Chart({ title, series, marks }) {
  const ref = useRef(null);
  useEffect(() => {
    if (!ref.current || !series.x.length) return;
    const opts = {
      title,
      width: Math.min(ref.current.clientWidth || 560, 560),
      height: 200,
      // one interval so far: a minute around it instead of uPlot's years
      scales:
        series.x[0] === series.x[series.x.length - 1]
          ? { x: { time: true, auto: false, range: [series.x[0] - 30, series.x[0] + 30] } }
          : {},
      series: [{}, { label: "canary", stroke: "#d9480f" }, { label: "baseline", stroke: "#1864ab" }],
      hooks: {
        draw: [
          (u) => {
            const ctx = u.ctx;
            for (const m of marks) {
              const x = u.valToPos(m.t, "x", true);
              if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
              ctx.save();
              ctx.strokeStyle = m.kind === "rollback" ? "#c92a2a" : "#868e96";
              ctx.setLineDash(m.kind === "rollback" ? [] : [4, 4]);
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
              ctx.restore();
            }
          },
        ],
      },
    };
    const u = new uPlot(opts, [series.x, series.canary, series.baseline], ref.current);
    return () => u.destroy();
  }, [JSON.stringify(series), JSON.stringify(marks)]);
  return html`<div class="chart" ref=${ref}>${series.x.length ? null : html`<p>${title}: no interval yet</p>`}</div>`;
}

// canary vs baseline of the first target, from the rollout.interval events
function seriesOf(events, field) {
  const pts = events
    .filter((e) => e.kind === "rollout.interval" && e.details && e.details.targets)
    .map((e) => {
      const t = Object.values(e.details.targets)[0] || {};
      const c = t.canary || {}, b = t.baseline || {};
      return [Date.parse(e.ts) / 1000, c[field] ?? null, b[field] ?? null];
    })
    .sort((a, b) => a[0] - b[0]);
  return { x: pts.map((p) => p[0]), canary: pts.map((p) => p[1]), baseline: pts.map((p) => p[2]) };
}

function Rollout({ name, me, tick }) {
  const ro = useLoad(() => api(`/v1/rollouts/${encodeURIComponent(name)}`), [name, tick], 1000);
  // the rollout's events, fetched once and then only the new ones (at most 5000 kept)
  const cache = useRef({ name: null, rows: [] });
  const ev = useLoad(async () => {
    const c = cache.current;
    if (c.name !== name) Object.assign(c, { name, rows: [] });
    for (let i = 0; i < 20; i++) {
      const since = c.rows.length ? c.rows[c.rows.length - 1].id : 0;
      const got = await api(`/v1/rollouts/${encodeURIComponent(name)}/events?since=${since}`);
      const rows = (got && (got.events || got)) || [];
      c.rows = c.rows.concat(rows).slice(-5000);
      if (rows.length < 1000) break;
    }
    return c.rows;
  }, [name, tick], 3000);
  const r = ro.data;
  if (!r) return html`<${Err} error=${ro.error} />`;
  const s = r.step;
  const events = ev.data || [];
  const marks = events
    .filter((e) => e.kind === "rollout.step" || /rollback|rolled_back/.test(e.kind))
    .map((e) => ({ t: Date.parse(e.ts) / 1000, kind: /roll/.test(e.kind) ? "rollback" : "step" }));
  const post = (path, body) => api(`/v1/rollouts/${encodeURIComponent(name)}/${path}`, { method: "POST", body });
  const canWrite = has(me, "rollouts:write");
  const mine = s.approvals && s.approvals.required.includes(me.name) && !s.approvals.approved.includes(me.name);
  const canApprove = has(me, "approve") && mine && r.state !== "completed";
  const steps = [];
  for (let i = 0; i < s.of; i++) steps.push(i);
  return html`<section>
    <h2>Rollout ${r.name} <span class=${"state " + r.state} data-testid="rollout-state">${r.state}</span></h2>
    <${Err} error=${ro.error} />
    <ol class="steps" data-testid="steps">
      ${steps.map((i) => html`<li class=${i < s.index ? "done" : i === s.index ? "current" : ""}
        data-testid=${"step-" + i}>step ${i + 1}: ${planText(r.plan && r.plan[i])}${i === s.index ? ` (${s.phase})` : ""}</li>`)}
    </ol>
    <p data-testid="step-text">Step ${Math.min(s.index + 1, s.of)} of ${s.of}: ${s.name ? s.name + ", " : ""}${s.kind}, ${s.phase}${s.started_at ? ", since " + when(s.started_at) : ""}</p>
    <p data-testid="gate">Next gate: ${gateText(r)}</p>
    ${s.approvals && html`<p data-testid="approvals">Approvals given: ${s.approvals.approved.join(", ") || "none"};
      missing: ${s.approvals.required.filter((n) => !s.approvals.approved.includes(n)).join(", ") || "none"}</p>`}
    ${s.evidence && html`<p>Evidence so far: <code>${JSON.stringify(s.evidence)}</code></p>`}
    ${r.pause_reason && html`<p class="warn">Paused: ${r.pause_reason}</p>`}
    ${r.post && html`<p class="err" data-testid="rollback">Rolled back (${r.post.stage}): ${r.post.reason}</p>`}
    <h3>Targets</h3>
    <table><tr><th>target</th><th>kind</th><th>weight</th><th>rolled back</th></tr>
      ${r.targets.map((t) => html`<tr><td>${t.name}</td><td>${t.kind} ${t.service || t.flag} ${t.canary || ""}</td>
        <td data-testid=${"weight-" + t.name}>${t.weight}%</td><td>${t.rolled_back ? "yes" : "no"}</td></tr>`)}
    </table>
    <h3>Checks</h3>
    <table data-testid="checks"><tr><th>check</th><th>metric</th><th>verdict</th><th>canary</th><th>baseline</th><th>reason</th></tr>
      ${r.checks.map((c) => {
        const v = c.last_verdict;
        return html`<tr><td>${c.name}</td><td>${c.metric}</td>
          <td class=${"verdict " + (v ? v.outcome : "")} data-testid=${"verdict-" + c.name}>${v ? v.outcome : "–"}</td>
          <td>${v ? `${num(v.canary.value, 4)} (${v.canary.requests} req)` : "–"}</td>
          <td>${v ? `${num(v.baseline.value, 4)} (${v.baseline.requests} req)` : "–"}</td>
          <td data-testid=${"reason-" + c.name}>${v ? v.reason : ""}</td></tr>`;
      })}
    </table>
    <div class="charts">
      <${Chart} title="error rate: canary vs baseline" series=${seriesOf(events, "error_rate")} marks=${marks} />
      <${Chart} title="p99 latency (ms): canary vs baseline" series=${seriesOf(events, "p99_ms")} marks=${marks} />
    </div>
    <h3>Controls</h3>
    <div class="controls" data-testid="controls">
      ${canWrite && html`
        <${Action} id="start" label="Start" confirm=${`Start ${name}?`} run=${() => post("start")} />
        <${Action} id="promote" label="Promote" confirm="Promote to the next step?" run=${() => post("promote")} />
        <${Action} id="promote-full" label="Promote --full" confirm="Skip every step and go to 100%?" run=${() => post("promote", { full: true })} danger />
        <${Action} id="pause" label="Pause" confirm="Pause?" run=${() => post("pause")} />
        <${Action} id="resume" label="Resume" confirm="Resume?" run=${() => post("resume")} />
        <${Action} id="abort" label="Abort" confirm="Abort and roll back?" run=${() => post("abort")} danger />
        <${Action} id="retry" label="Retry" confirm="Retry from the first step?" run=${() => post("retry")} />`}
      ${canApprove && html`<${Action} id="approve" label=${"Approve as " + me.name}
          confirm=${`Approve step ${s.index + 1} as ${me.name}?`} run=${() => post("approve")} />`}
      ${!canWrite && !canApprove && html`<p class="hint" data-testid="no-controls">Your token (${me.name}) has no control here.</p>`}
      <${Download} name=${name} />
    </div>
    <h3>Events (newest 50; all on the Events page)</h3>
    <${EventTable} events=${events.slice(-50).reverse()} />
  </section>`;
}

function Download({ name }) {
  const [err, setErr] = useState(null);
  const go = async () => {
    try {
      const b = await api(`/v1/rollouts/${encodeURIComponent(name)}/evidence`);
      const url = URL.createObjectURL(new Blob([JSON.stringify(b, null, 2)], { type: "application/json" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `evidence-${name}.json`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    } catch (e) {
      setErr(e.message);
    }
  };
  return html`<button data-testid="evidence" onClick=${go}>Evidence bundle</button>${err && html`<span class="err">${err}</span>`}`;
}

// ---- flag ------------------------------------------------------------------

function Flag({ fkey, me, tick }) {
  const fl = useLoad(() => api(`/v1/feature-flags/${encodeURIComponent(fkey)}`), [fkey, tick]);
  const hist = useLoad(
    () => api(`/v1/events?limit=1000`).then((r) => r.events.filter((e) => e.subject === "flag/" + fkey || (e.details && e.details.key === fkey))),
    [fkey, tick],
  );
  const [p, setP] = useState("");
  const [node, setNode] = useState("");
  const [msg, setMsg] = useState(null);
  const f = fl.data;
  if (!f) return html`<${Err} error=${fl.error} />`;
  const w = has(me, "flags:write");
  const act = async (fn) => {
    try {
      await fn();
      setMsg({ ok: true, text: "saved" });
    } catch (e) {
      setMsg({ ok: false, text: `${e.status} ${e.message}` });
    }
  };
  const put = (def) => {
    const body = { ...def };
    delete body.revision;
    delete body.source;
    delete body.percentage;
    delete body.feature;
    return api(`/v1/feature-flags/${encodeURIComponent(fkey)}`, { method: "PUT", body });
  };
  return html`<section>
    <h2>Flag ${f.key}</h2>
    <p>${f.description}</p>
    <p>Enabled: <b data-testid="flag-enabled">${f.enabled ? "yes" : "no"}</b> · percentage
      <b data-testid="flag-percentage">${f.percentage}%</b> · sticky ${f.sticky} · source ${f.source}</p>
    <h3>Rules</h3>
    <table><tr><th>#</th><th>segment</th><th>serves</th></tr>
      ${(f.rules || []).map((r, i) => html`<tr><td>${i + 1}</td><td>${r.segment}</td>
        <td>${r.serve || JSON.stringify(r.rollout)}</td></tr>`)}
      <tr><td>–</td><td>everyone else</td><td>${JSON.stringify(f.rollout)}</td></tr>
    </table>
    ${w && html`<form class="row" onSubmit=${(e) => {
      e.preventDefault();
      act(() => api("/v1/feature-flags", { method: "POST", body: { feature: fkey, percentage: Number(p) } }));
    }}>
      <label>Percentage <input data-testid="pct-input" type="number" min="0" max="100" step="0.001" value=${p}
        onInput=${(e) => setP(e.target.value)} /></label>
      <button data-testid="pct-save" type="submit">Set percentage</button>
      ${f.enabled
        ? html`<${Action} id="kill" label="Kill switch (disable)" danger confirm=${`Disable ${fkey} for everyone?`}
            run=${() => api("/v1/feature-flags", { method: "POST", body: { feature: fkey, enabled: false } })} />`
        : html`<${Action} id="enable" label="Enable" confirm=${`Enable ${fkey}?`}
            run=${() => api("/v1/feature-flags", { method: "POST", body: { feature: fkey, enabled: true } })} />`}
    </form>`}
    ${msg && html`<p class=${msg.ok ? "ok" : "err"} data-testid="flag-msg">${msg.text}</p>`}
    <h3>Exclude / include</h3>
    <div class="lists">
      <div><h4>excluded</h4><ul data-testid="exclude">${(f.exclude || []).map((n) => html`<li>${n}
        ${w && html`<button data-testid=${"unexclude-" + n} onClick=${() => act(() => api(`/v1/feature-flags/${encodeURIComponent(fkey)}/exclude/${encodeURIComponent(n)}`, { method: "DELETE" }))}>remove</button>`}</li>`)}</ul></div>
      <div><h4>included</h4><ul data-testid="include">${(f.include || []).map((n) => html`<li>${n}
        ${w && html`<button onClick=${() => act(() => put({ ...f, include: f.include.filter((x) => x !== n) }))}>remove</button>`}</li>`)}</ul></div>
    </div>
    ${w && html`<form class="row" onSubmit=${(e) => e.preventDefault()}>
      <input data-testid="node-input" placeholder="node id" value=${node} onInput=${(e) => setNode(e.target.value)} />
      <button data-testid="exclude-add" onClick=${() => act(() => api("/v1/feature-flags/exclude", { method: "POST", body: { feature: fkey, nodes: [node] } }))}>Exclude</button>
      <button data-testid="include-add" onClick=${() => act(() => put({ ...f, include: [...(f.include || []), node] }))}>Include</button>
    </form>`}
    <h3>History</h3>
    <${EventTable} events=${((hist.data || []).slice()).reverse()} diff />
  </section>`;
}

// ---- events ----------------------------------------------------------------

function EventTable({ events, diff }) {
  return html`<table class="events" data-testid="events">
    <tr><th>id</th><th>time</th><th>actor</th><th>kind</th><th>subject</th><th>details</th></tr>
    ${events.map((e) => html`<tr>
      <td>${e.id}</td><td>${e.ts}</td><td class="actor">${e.actor}</td><td>${e.kind}</td><td>${e.subject}</td>
      <td>${diff && e.details && (e.details.before || e.details.after)
        ? html`<div>before: <code>${JSON.stringify(e.details.before)}</code></div>
               <div>after: <code>${JSON.stringify(e.details.after)}</code></div>`
        : html`<code title=${JSON.stringify(e.details)}>${clip(JSON.stringify(e.details))}</code>`}</td></tr>`)}
  </table>`;
}

function Events({ tick }) {
  const [f, setF] = useState({ subject: "", actor: "", kind: "" });
  const all = useLoad(async () => {
    // the newest 1000: page back from the end
    let since = 0, out = [];
    for (let i = 0; i < 50; i++) {
      const r = await api(`/v1/events?since=${since}&limit=1000`);
      out = out.concat(r.events);
      if (r.events.length < 1000) break;
      since = r.events[r.events.length - 1].id;
      out = out.slice(-1000);
    }
    return out;
  }, [tick]);
  const rows = (all.data || [])
    .filter((e) => (!f.subject || (e.subject || "").includes(f.subject)) && (!f.actor || e.actor === f.actor) && (!f.kind || e.kind.startsWith(f.kind)))
    .reverse();
  const input = (k) => html`<label>${k} <input data-testid=${"filter-" + k} value=${f[k]}
    onInput=${(e) => setF({ ...f, [k]: e.target.value })} /></label>`;
  return html`<section><h2>Audit log</h2>
    <div class="row">${input("subject")} ${input("actor")} ${input("kind")}</div>
    <${Err} error=${all.error} />
    <${EventTable} events=${rows} /></section>`;
}

// ---- the app ---------------------------------------------------------------

function App() {
  const [me, setMe] = useState(null);
  const [checked, setChecked] = useState(!token());
  const [path, setPath] = useState(route());
  const [tick, setTick] = useState(0);
  const [stream, setStream] = useState("connecting");

  useEffect(() => {
    const on = () => setPath(route());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  useEffect(() => {
    if (!token()) return;
    api("/v1/whoami").then(
      (m) => { setMe(m); setChecked(true); },
      () => { setToken(""); setChecked(true); },
    );
  }, []);
  useEffect(() => {
    if (!me) return;
    let pending = null;
    const stop = eventStream(
      () => {
        // a burst of events reloads the page's data once
        if (!pending) pending = setTimeout(() => { pending = null; setTick((t) => t + 1); }, 200);
      },
      (s) => {
        setStream(s);
        if (s === "live") setTick((t) => t + 1);
      },
    );
    return () => { stop(); if (pending) clearTimeout(pending); };
  }, [me]);

  if (!checked) return html`<p>Checking the token…</p>`;
  if (!me) return html`<${SignIn} onIn=${setMe} />`;
  const [page, arg] = path;
  return html`<div>
    <header>
      <b>canaryd</b>
      <nav><a href="#/">Overview</a> <a href="#/events">Events</a></nav>
      <span class="me" data-testid="me">${me.name} (${me.scopes.join(", ")})</span>
      <button data-testid="signout" onClick=${() => { setToken(""); setMe(null); }}>Sign out</button>
    </header>
    ${stream === "broken" && html`<div class="banner" data-testid="stream-broken" role="alert">
      Live updates are interrupted; reconnecting…</div>`}
    <main data-testid=${"page-" + page}>
      ${page === "rollout" ? html`<${Rollout} name=${arg} me=${me} tick=${tick} />`
        : page === "flag" ? html`<${Flag} fkey=${arg} me=${me} tick=${tick} />`
        : page === "events" ? html`<${Events} tick=${tick} />`
        : html`<${Overview} tick=${tick} />`}
    </main>
  </div>`;
}

const root = document.getElementById("app");
root.textContent = ""; // the "Loading" line
render(html`<${App} />`, root);
