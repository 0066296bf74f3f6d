// Drives Bramble's web UI in headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM)
// against a running master, and saves screenshots. Run by the Rust test
// `web_ui_in_headless_chromium_shows_agents_task_output_and_pi_progress` (tests/tests/http_api.rs),
// which starts the cluster, finishes a task and starts a pi job first:
//
//   node tests/browser/ui.mjs http://127.0.0.1:PORT FRAMEWORK_ID TASK_ID SCREENSHOT_DIR
//
// Checks: the overview lists the agents (pi-a, pi-b); the pi job's progress moves while the
// page is open (live, from the event stream); the finished task's page shows what it printed.
// Exits non-zero with a reason on the first failed check.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, framework, task, shots] = process.argv.slice(2);
if (!shots) {
  console.error("usage: ui.mjs BASE_URL FRAMEWORK_ID TASK_ID SCREENSHOT_DIR");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const AGENTS = (process.env.BRAMBLE_AGENTS || "pi-a,pi-b").split(",");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // Playwright gives every launch a fresh, empty user data dir.
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const problems = [];
let failed = false;
const t0 = Date.now();
function check(ok, what) {
  const at = ((Date.now() - t0) / 1000).toFixed(1);
  console.log(`${ok ? "ok  " : "FAIL"} ${what} [${at} s]`);
  if (!ok) failed = true;
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });

  // Overview: the agents, then the pi job's progress moving.
  await page.goto(`${base}/#/`);
  for (const a of AGENTS) {
    const row = await page.waitForSelector(`#agents tr[data-agent="${a}"]`, { timeout: 20000 }).catch(() => null);
    check(row !== null, `overview lists agent ${a}`);
  }
  await page.waitForSelector("#live.on", { timeout: 10000 }).catch(() => null);
  check(await page.$("#live.on") !== null, "event stream connected");
  const job = '.job[data-job="pi"]';
  const first = await page.waitForSelector(job, { timeout: 60000 }).catch(() => null);
  check(first !== null, "overview shows the pi job");
  if (first) {
    const done0 = Number(await page.getAttribute(job, "data-done"));
    const total = Number(await page.getAttribute(job, "data-total"));
    check(done0 < total, `pi job still running when first seen (${done0}/${total})`);
    const moved = await page.waitForFunction(
      ([sel, d0]) => Number(document.querySelector(sel)?.dataset.done) > d0,
      [job, done0], { timeout: 90000 },
    ).then(() => true, () => false);
    const done1 = Number(await page.getAttribute(job, "data-done"));
    check(moved, `pi progress moves on the open page (${done0} -> ${done1} of ${total})`);
    await page.screenshot({ path: join(shots, "overview.png"), fullPage: true });
  }

  // The finished task's page: its output, from its sandbox on the agent.
  await page.goto(`${base}/#/task/${encodeURIComponent(framework)}/${encodeURIComponent(task)}`);
  const printed = await page.waitForFunction(
    () => document.querySelector("#log")?.textContent.includes("hello from a Raspberry Pi"),
    null, { timeout: 20000 },
  ).then(() => true, () => false);
  check(printed, "the task page shows what the task printed");
  const files = await page.waitForSelector('#files a[data-file="stdout"]', { timeout: 10000 }).catch(() => null);
  check(files !== null, "the task page lists its sandbox files");
  const state = await page.getAttribute("#task-info [data-state]", "data-state").catch(() => null);
  check(state === "Finished", `the task page shows the task FINISHED (${state})`);
  await page.click('#log-tabs button[data-path="stderr"]');
  const stderr = await page.waitForFunction(
    () => document.querySelector("#log")?.textContent.includes("a line on stderr"),
    null, { timeout: 10000 },
  ).then(() => true, () => false);
  check(stderr, "the stderr tab shows stderr");
  await page.click('#log-tabs button[data-path="stdout"]');
  await page.waitForFunction(() => document.querySelector("#log")?.dataset.complete === "true", null, { timeout: 10000 }).catch(() => {});
  await page.screenshot({ path: join(shots, "task.png"), fullPage: true });

  // The tasks view with a filter.
  await page.goto(`${base}/#/tasks?state=Finished`);
  const row = await page.waitForSelector(`#tasks tr[data-task="${task}"]`, { timeout: 10000 }).catch(() => null);
  check(row !== null, "the tasks view filtered to FINISHED lists the task");
  await page.screenshot({ path: join(shots, "tasks.png"), fullPage: true });

  // A phone.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const mobile = await phone.newPage();
  await mobile.goto(`${base}/#/`);
  await mobile.waitForSelector(`#agents tr[data-agent="${AGENTS[0]}"]`, { timeout: 20000 }).catch(() => null);
  const overflow = await mobile.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the overview fits a phone's width (overflow ${overflow}px)`);
  await mobile.screenshot({ path: join(shots, "overview-phone.png"), fullPage: true });

  const real = problems.filter((p) => !p.includes("panel.png") && !p.includes("404"));
  check(real.length === 0, `no script errors${real.length ? ": " + real.join("; ") : ""}`);
} catch (e) {
  check(false, `unexpected: ${e.stack || e}`);
} finally {
  await browser.close();
}
console.log(failed ? "web UI check FAILED" : `web UI check ok; screenshots in ${shots}`);
process.exit(failed ? 1 : 0);
