// The dashboard in a real browser: headless Debian chromium driven by
// playwright-core (no browser download). Run by tests/e2e/test_ui.py, which
// starts canaryd, the upstreams and the load, and passes in the environment:
//   CANARYD_URL, CANARYD_PID, SHOTS (screenshot folder), TOKENS (JSON name -> secret)
// Exits 0 when every step passed; prints each step and, on failure, why.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const URL = process.env.CANARYD_URL;
const SHOTS = process.env.SHOTS || "/tmp";
const TOKENS = JSON.parse(process.env.TOKENS || "{}");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const T = 30000; // the longest any one wait may take

mkdirSync(SHOTS, { recursive: true });

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok:", what);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const cspErrors = [];

// A fresh context per identity: sessionStorage (the token) is per tab.
async function signIn(name) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await ctx.newPage();
  page.setDefaultTimeout(T);
  page.on("console", (m) => {
    if (/Content.Security.Policy|Refused to/i.test(m.text())) cspErrors.push(m.text());
  });
  await page.goto(URL + "/ui/");
  await page.fill("#token", TOKENS[name]);
  await page.click("#signin");
  await page.waitForSelector(`[data-testid=me]:has-text("${name}")`);
  return { ctx, page };
}

// The API as the page would call it, with a token of our choosing (a forged call).
async function forged(page, method, path, token, body) {
  return page.evaluate(
    async ([m, p, t, b]) => {
      const r = await fetch(p, {
        method: m,
        headers: { Authorization: "Bearer " + t, "Content-Type": "application/json" },
        body: b === null ? undefined : JSON.stringify(b),
      });
      return r.status;
    },
    [method, path, token, body ?? null],
  );
}

async function click(page, id) {
  await page.click(`[data-testid=btn-${id}]`);
  await page.click(`[data-testid=confirm-${id}]`);
  await page.waitForSelector(`[data-testid=msg-${id}]`);
  return page.textContent(`[data-testid=msg-${id}]`);
}

let failed = false;
try {
  // -- sign-in: a wrong token is refused, nothing is stored
  {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(T);
    await page.goto(URL + "/ui/");
    await page.fill("#token", "not-a-token");
    await page.click("#signin");
    await page.waitForSelector(".signin .err");
    check((await page.textContent(".signin .err")).includes("not valid"), "a wrong token is refused");
    check((await page.evaluate(() => sessionStorage.length)) === 0, "nothing is stored for a wrong token");
    check((await page.evaluate(() => document.cookie)) === "", "no cookie is ever set");
    await ctx.close();
  }

  // -- ops (admin) starts web-v2 and watches it advance, live
  const ops = await signIn("ops");
  await ops.page.waitForSelector("[data-testid=services] >> text=web");
  await ops.page.waitForSelector("[data-testid=state-web-v2]:has-text('idle')");
  await ops.page.goto(URL + "/ui/#/rollout/web-v2");
  await ops.page.waitForSelector("[data-testid=rollout-state]:has-text('idle')");
  check((await click(ops.page, "start")).includes("progressing"), "start from the page");
  await ops.page.waitForSelector("[data-testid=step-text]:has-text('Step 1 of 3')");
  // the step list is the plan: what each step sets and who approves
  await ops.page.waitForSelector("[data-testid=step-0]:has-text('set web 10%, for 3s')");
  await ops.page.waitForSelector("[data-testid=step-1]:has-text('approval by vp-eng, infra-director, security-lead')");
  await ops.page.waitForSelector("[data-testid=step-2]:has-text('set web 100%')");
  await ops.page.waitForSelector("[data-testid=weight-web]:has-text('10%')");
  // the step passes on evidence, then the approval step waits: seen without a reload
  await ops.page.waitForSelector("[data-testid=step-text]:has-text('Step 2 of 3')", { timeout: 60000 });
  await ops.page.waitForSelector("[data-testid=gate]:has-text('approval from vp-eng, infra-director, security-lead')");
  // step 1 passed on evidence: its event is in the page's log, and the check has numbers
  await ops.page.waitForSelector("[data-testid=events] >> text=rollout.step.passed");
  check(/\(\d+ req\)/.test(await ops.page.textContent("[data-testid=checks]")), "the check shows its numbers");
  await ops.page.screenshot({ path: `${SHOTS}/rollout-approval.png`, fullPage: false });
  check((await ops.page.$$("[data-testid=btn-approve]")).length === 0, "an admin who is not named sees no Approve");
  check((await ops.page.$$("[data-testid=btn-promote]")).length === 1, "an admin sees the controls");

  // -- a wrong identity: no button, and a forged call is 403
  const intern = await signIn("intern");
  await intern.page.goto(URL + "/ui/#/rollout/web-v2");
  await intern.page.waitForSelector("[data-testid=approvals]");
  check((await intern.page.$$("[data-testid=btn-approve]")).length === 0, "intern gets no Approve button");
  check((await forged(intern.page, "POST", "/v1/rollouts/web-v2/approve", TOKENS.intern)) === 403,
    "intern's forged approve is 403");
  await intern.ctx.close();

  // -- each named approver approves from the page
  for (const name of ["vp-eng", "infra-director", "security-lead"]) {
    const a = await signIn(name);
    await a.page.goto(URL + "/ui/#/rollout/web-v2");
    await a.page.waitForSelector("[data-testid=btn-approve]");
    check((await a.page.$$("[data-testid=btn-promote]")).length === 0, `${name} (approve only) sees no promote`);
    await a.page.click("[data-testid=btn-approve]");
    await a.page.click("[data-testid=confirm-approve]");
    // approved: the button goes (the step no longer waits for this identity)
    await a.page.waitForSelector("[data-testid=btn-approve]", { state: "detached" });
    const err = await a.page.$$("[data-testid=msg-approve].err");
    check(err.length === 0, `${name} approved from the page`);
    await a.ctx.close();
  }
  // ops' page follows the rollout to the end through the event stream
  await ops.page.waitForSelector("[data-testid=rollout-state]:has-text('completed')", { timeout: 60000 });
  check(true, "web-v2 completed after the three approvals");

  // -- the audit log shows who pressed what
  await ops.page.goto(URL + "/ui/#/events");
  await ops.page.fill("[data-testid=filter-kind]", "rollout.approved");
  await ops.page.waitForSelector("[data-testid=events] >> text=security-lead");
  const actors = await ops.page.$$eval("[data-testid=events] td.actor", (tds) => tds.map((t) => t.textContent));
  check(["vp-eng", "infra-director", "security-lead"].every((n) => actors.includes(n)) && actors.length === 3,
    "the event log names each approver: " + actors.join(", "));

  // -- a bad canary is rolled back; the verdict and its reason are shown
  await ops.page.goto(URL + "/ui/#/rollout/api-v3");
  await ops.page.waitForSelector("[data-testid=rollout-state]:has-text('idle')");
  await click(ops.page, "start");
  await ops.page.waitForSelector("[data-testid=rollout-state]:has-text('rolled_back')", { timeout: 60000 });
  await ops.page.waitForSelector("[data-testid=verdict-errors]:has-text('fail')");
  const reason = await ops.page.textContent("[data-testid=reason-errors]");
  check(reason.length > 10, "the failing verdict's reason is shown: " + reason);
  check((await ops.page.textContent("[data-testid=rollback]")).includes("Rolled back"), "the rollback is shown");
  await ops.page.waitForSelector(".chart canvas");
  await ops.page.screenshot({ path: `${SHOTS}/rollout-rollback.png`, fullPage: false });

  // -- edit a flag's percentage
  const fl = await signIn("flagger");
  await fl.page.goto(URL + "/ui/#/flag/checkout");
  await fl.page.waitForSelector("[data-testid=flag-percentage]:has-text('10%')");
  await fl.page.fill("[data-testid=pct-input]", "35");
  await fl.page.click("[data-testid=pct-save]");
  await fl.page.waitForSelector("[data-testid=flag-percentage]:has-text('35%')");
  await fl.page.waitForSelector("[data-testid=events] >> text=flagger");
  check(true, "flag percentage edited to 35% and the change is in its history");
  await fl.page.fill("[data-testid=node-input]", "node-7");
  await fl.page.click("[data-testid=exclude-add]");
  await fl.page.waitForSelector("[data-testid=exclude] >> text=node-7");
  await fl.page.click("[data-testid=unexclude-node-7]");
  await fl.page.waitForSelector("[data-testid=exclude] >> text=node-7", { state: "detached" });
  check(true, "a node excluded and removed again");
  await fl.page.fill("[data-testid=node-input]", "node-9");
  await fl.page.click("[data-testid=include-add]");
  await fl.page.waitForSelector("[data-testid=include] >> text=node-9");
  check(true, "a node included (PUT of the whole definition)");
  await click(fl.page, "kill");
  await fl.page.waitForSelector("[data-testid=flag-enabled]:has-text('no')");
  await click(fl.page, "enable");
  await fl.page.waitForSelector("[data-testid=flag-enabled]:has-text('yes')");
  check(true, "kill switch and enable from the page");
  await fl.ctx.close();

  // -- a read token sees everything and can change nothing
  const viewer = await signIn("viewer");
  await viewer.page.goto(URL + "/ui/#/rollout/web-v2");
  await viewer.page.waitForSelector("[data-testid=no-controls]");
  check((await viewer.page.$$("[data-testid^=btn-]")).length === 0, "read token: no control buttons");
  await viewer.page.goto(URL + "/ui/#/flag/checkout");
  await viewer.page.waitForSelector("[data-testid=flag-percentage]:has-text('35%')");
  check((await viewer.page.$$("[data-testid=pct-input]")).length === 0, "read token: no flag editing");
  check((await forged(viewer.page, "POST", "/v1/feature-flags", TOKENS.viewer, { feature: "checkout", percentage: 90 })) === 403,
    "read token: a forged flag write is 403");
  check((await forged(viewer.page, "POST", "/v1/rollouts/web-v2/retry", TOKENS.viewer)) === 403,
    "read token: a forged rollout control is 403");
  await viewer.ctx.close();

  // -- the stream breaks (canaryd dies): a banner says so
  await ops.page.goto(URL + "/ui/#/");
  await ops.page.waitForSelector("[data-testid=services]");
  process.kill(Number(process.env.CANARYD_PID), "SIGKILL");
  await ops.page.waitForSelector("[data-testid=stream-broken]");
  check(true, "a broken stream shows the banner");
  check(cspErrors.length === 0, "no Content-Security-Policy violation: " + cspErrors.join(" | "));
} catch (e) {
  failed = true;
  console.error("FAILED:", e.message);
  for (const ctx of browser.contexts())
    for (const p of ctx.pages())
    {
      await p.screenshot({ path: `${SHOTS}/failure-${Date.now()}.png` }).catch(() => {});
      console.error("page " + p.url() + ":\n" + (await p.innerText("main").catch(() => "")).slice(0, 1500));
    }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
