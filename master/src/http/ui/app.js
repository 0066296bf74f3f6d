// Bramble web UI. No build step, no dependencies: the master serves this file as it is.
//
// Data flow: open the event stream (/api/v1/events); on its `hello` fetch the summary
// (/api/v1/summary: counts, frameworks, jobs, recently completed tasks) and the page of agents
// and of live tasks being shown (/api/v1/agents, /api/v1/tasks, PAGE at a time), never every
// agent or task: a 10,000-agent cluster costs the page what a 10-agent one does.
// Task and progress events patch the picture at once; anything else (and every task event,
// since allocations move with tasks) marks it stale, and a stale picture is refetched at
// most once a second. A `resync` (we fell behind) refetches too.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({
  "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
}[c]));
const STATES = ["Staging", "Starting", "Running", "Finished", "Failed", "Killed", "Lost", "Error"];
const TERMINAL = new Set(["Finished", "Failed", "Killed", "Lost", "Error"]);

const PAGE = 100;    // agents or live tasks a table shows at a time

// A paged list: the cursors of the pages before the one shown (`after` of each), the next
// page's cursor, and the list's total.
const pager = () => ({ after: [], next: null, total: 0 });

const app = {
  version: null,     // /version
  state: null,       // /api/v1/summary, with the shown pages as `agents` and `tasks`
  agentsPage: pager(),
  tasksPage: pager(),
  hostnames: new Map(), // agent id -> hostname, from every agent page seen
  tasks: new Map(),  // "fw/task" -> task summary (live, completed, and patched by events)
  stale: false,
  events: null,      // EventSource
  follow: null,      // EventSource of the task page's log tail
  route: null,
};

// ------------------------------------------------------------------------------------------
// Fetching

async function api(path, opts = {}) {
  const res = await fetch(path, { credentials: "same-origin", ...opts });
  if (res.status === 401) {
    showLogin();
    throw new Error("unauthorized");
  }
  return res;
}

const pageUrl = (list, p) => `/api/v1/${list}?limit=${PAGE}` +
  (p.after.length ? `&after=${encodeURIComponent(p.after[p.after.length - 1])}` : "");

async function getJson(path) {
  const res = await api(path);
  return res.ok ? res.json() : null;
}

async function refresh() {
  app.stale = false;
  try {
    const [sum, ag, tk, sv] = await Promise.all([
      getJson("/api/v1/summary"),
      getJson(pageUrl("agents", app.agentsPage)),
      getJson(pageUrl("tasks", app.tasksPage)),
      getJson("/api/v1/services"),
    ]);
    if (!sum || !ag || !tk) return;
    app.state = { ...sum, agents: ag.agents, tasks: tk.tasks, offers_outstanding: sum.counts.offers_outstanding,
      services: sv ? sv.services : [] };
    Object.assign(app.agentsPage, { next: ag.next, total: ag.total });
    Object.assign(app.tasksPage, { next: tk.next, total: tk.total });
    for (const a of ag.agents) app.hostnames.set(a.id, a.hostname);
    const tasks = new Map();
    for (const t of sum.completed_tasks.concat(tk.tasks)) tasks.set(key(t), t);
    app.tasks = tasks;
    render();
  } catch (e) { /* shown by the live indicator */ }
}

// Moves a paged list a page on or back, then refetches what is shown.
function turnPage(list, dir) {
  const p = list === "agents" ? app.agentsPage : app.tasksPage;
  if (dir === "next" && p.next) p.after.push(p.next);
  else if (dir === "prev" && p.after.length) p.after.pop();
  else return;
  refresh();
}

// The controls under a paged table: where this page is in the list, and the way on or back.
function pagerHtml(list, shown) {
  const p = list === "agents" ? app.agentsPage : app.tasksPage;
  if (!p.after.length && !p.next) return "";
  const from = p.after.length * PAGE;
  return `<div class="pager" data-list="${list}">
    <button class="link" data-dir="prev" ${p.after.length ? "" : "disabled"}>&larr; previous</button>
    <span class="muted">${list} ${num(from + (shown ? 1 : 0))}&ndash;${num(from + shown)} of ${num(p.total)}</span>
    <button class="link" data-dir="next" ${p.next ? "" : "disabled"}>next &rarr;</button></div>`;
}

document.addEventListener("click", (e) => {
  const b = e.target.closest(".pager button");
  if (b) turnPage(b.closest(".pager").dataset.list, b.dataset.dir);
});

const key = (t) => `${t.framework_id}/${t.id}`;

function connectEvents() {
  if (app.events) app.events.close();
  const es = new EventSource("/api/v1/events");
  app.events = es;
  const live = $("#live");
  es.addEventListener("hello", () => {
    live.textContent = "live"; live.className = "live on";
    refresh();
  });
  es.addEventListener("resync", refresh);
  es.addEventListener("task", (e) => {
    const t = JSON.parse(e.data);
    // Patch what is shown; a busy cluster's other tasks wait for their page.
    if (app.tasks.has(key(t)) || app.tasks.size < 2 * PAGE) app.tasks.set(key(t), t);
    app.stale = true;
    scheduleRender();
  });
  es.addEventListener("progress", (e) => {
    const ev = JSON.parse(e.data);
    if (!app.state) return;
    const job = app.state.jobs.find((j) => j.framework_id === ev.framework_id);
    if (job) job.progress = ev.progress;
    else app.stale = true;
    scheduleRender();
    refreshPanel();
  });
  for (const name of ["agent_registered", "agent_disconnected", "agent_removed", "agent_health",
    "agent_draining", "framework_subscribed", "framework_disconnected", "framework_removed"]) {
    es.addEventListener(name, () => { app.stale = true; });
  }
  es.onerror = () => {
    live.textContent = "offline"; live.className = "live off";
    // EventSource retries by itself; if we were logged out, the next boot's probe says so.
    if (es.readyState === EventSource.CLOSED) setTimeout(boot, 3000);
  };
}

setInterval(() => { if (app.stale) refresh(); }, 1000);
// Heartbeat ages and anything an event could not say: a slow full refresh.
setInterval(() => { if (app.state && !document.hidden) refresh(); }, 10000);

// ------------------------------------------------------------------------------------------
// Formatting

const cpus = (milli) => (milli / 1000).toFixed(milli % 1000 ? 1 : 0);
const mem = (mib) => mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${mib} MiB`;
const pct = (a, b) => (b > 0 ? Math.min(100, (100 * a) / b) : 0);
const num = (n) => Number(n).toLocaleString("en-US");
function ago(t) {
  if (!t || !app.state) return "";
  const s = Math.max(0, app.state.now - t);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}
function dur(a, b) {
  if (!a) return "";
  const s = Math.max(0, (b || app.state.now) - a);
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
}
const chip = (state, n) => `<span class="chip st-${esc(state)}">${esc(state.toUpperCase())}${n === undefined ? "" : ` ${n}`}</span>`;
function bar(used, total, cls, label) {
  return `<div class="barlabel"><span>${label}</span><span>${Math.round(pct(used, total))}%</span></div>
    <div class="bar ${cls}"><span style="width:${pct(used, total).toFixed(1)}%"></span></div>`;
}
const agentName = (id) => app.hostnames.get(id) ?? id;
const fwName = (id) => app.state?.frameworks.find((f) => f.id === id)?.name ?? id;
// A framework's own web UI (Mesos's webui_url), as the framework published it: only an
// http(s) URL becomes a link (a `javascript:` or `data:` one must never be clickable), and
// everything is escaped. Tested in master/src/http/ui.rs.
// webuiLink-begin
function webuiLink(url) {
  if (!url) return "";
  let parsed = null;
  try { parsed = new URL(url); } catch (e) { /* not a URL: shown as text */ }
  if (parsed && (parsed.protocol === "http:" || parsed.protocol === "https:")) {
    return `<a class="mono" href="${esc(parsed.href)}" target="_blank" rel="noopener noreferrer">${esc(url)}</a>`;
  }
  return `<span class="mono muted">${esc(url)}</span>`;
}
// webuiLink-end
const taskHref = (t) => `#/task/${encodeURIComponent(t.framework_id)}/${encodeURIComponent(t.id)}`;

// ------------------------------------------------------------------------------------------
// Views

function parseRoute() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "overview", args: parts.slice(1), query: new URLSearchParams(query || "") };
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

function render() {
  if (!app.state) return;
  const route = parseRoute();
  const routeKey = location.hash;
  const changed = app.route !== routeKey;
  app.route = routeKey;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === route.name ||
      (route.name === "task" && a.dataset.nav === "tasks"));
  }
  $("#cluster-name").textContent = app.state.name || "Bramble";
  $("#footer").textContent = `Bramble ${app.state.version} · cluster ${app.state.cluster_id.slice(0, 16)}…`;
  const main = $("#main");
  if (route.name === "task") {
    if (changed || !$("#task-info")) taskPage(main, route.args[0], route.args[1]);
    else taskInfo(route.args[0], route.args[1]);
    return;
  }
  if (changed) stopFollow();
  $("#panel-card").hidden = true;
  // Keep the filters' focus and values across re-renders of the tasks view.
  const focused = document.activeElement?.id;
  const view = { overview, agents, frameworks, services, tasks: tasksView }[route.name] || overview;
  main.innerHTML = view(route);
  if (route.name === "tasks") wireFilters();
  if (focused && $("#" + focused)) $("#" + focused).focus();
  $("#panel-card").hidden = !(panelOk && route.name === "overview");
}

function totals() {
  const c = app.state.counts;
  return { total: c.total, used: c.allocated };
}

// Live tasks from the master's counts, recently completed ones from the summary's list.
function countByState() {
  const c = { ...app.state.counts.tasks_by_state };
  for (const t of app.state.completed_tasks) c[t.state] = (c[t.state] || 0) + 1;
  return c;
}

function jobCard(j) {
  const p = j.progress;
  const ratio = p.total ? p.done / p.total : 0;
  const est = p.estimate == null ? "" :
    `<div class="pi" data-estimate>${esc(p.estimate.toFixed(Math.min(15, Math.max(4, (p.correct_digits || 0) + 2))))}</div>
     <div class="muted">${p.correct_digits == null ? "" : `${p.correct_digits} correct digits · `}${esc(p.job)}</div>`;
  return `<div class="card job" data-job="${esc(p.job)}" data-done="${p.done}" data-total="${p.total}">
    <h2>${esc(j.framework_name || j.framework_id)} ${p.finished ? chip("Finished") : chip("Running")}</h2>
    ${est}
    <div class="barlabel"><span>${num(p.done)} / ${num(p.total)} ${esc(p.unit)}</span><span data-progress>${(100 * ratio).toFixed(1)}%</span></div>
    <div class="bar job"><span style="width:${(100 * ratio).toFixed(2)}%"></span></div>
    <div class="muted">${p.tasks_done}/${p.tasks_total} tasks · ${num(Math.round(p.rate_per_s))} ${esc(p.unit)}/s · ${p.elapsed_s.toFixed(1)} s</div>
  </div>`;
}

// An agent's dot: up, down, or up but unhealthy (no offers: its executors keep failing).
function agentDot(a) {
  if (!a.connected) return '<span class="down" title="disconnected">●</span>';
  if (a.unhealthy) return `<span class="sick" title="${esc(a.unhealthy)}">●</span>`;
  return '<span class="up" title="connected">●</span>';
}
const sick = (a) => (a.connected && a.unhealthy ? ` <span class="chip sick" title="${esc(a.unhealthy)}">unhealthy</span>` : "");
// An operator drained it (`bramble agent drain`): offered nothing until undrained; "draining"
// while tasks (or executors) still hold resources there, "drained" once none do.
function drain(a) {
  if (!a.draining) return "";
  const what = a.allocated.cpus_milli > 0 || a.allocated.mem_mib > 0 ? "draining" : "drained";
  return ` <span class="chip drain" data-drain="${what}" title="bramble agent drain: offered nothing until undrained">${what}</span>`;
}

function agentRows(list) {
  return list.map((a) => `<tr data-agent="${esc(a.hostname)}">
    <td>${agentDot(a)} <strong>${esc(a.hostname)}</strong>${sick(a)}${drain(a)}
      <div class="muted mono hide-sm">${esc(a.id)}</div></td>
    <td>${bar(a.allocated.cpus_milli, a.total.cpus_milli, "cpu", `CPU ${cpus(a.allocated.cpus_milli)} / ${cpus(a.total.cpus_milli)}`)}</td>
    <td>${bar(a.allocated.mem_mib, a.total.mem_mib, "mem", `mem ${mem(a.allocated.mem_mib)} / ${mem(a.total.mem_mib)}`)}</td>
  </tr>`).join("");
}

// A replicated group's masters (`[ha]`; absent on a single master): each one's role and term,
// the leader marked.
function mastersCard(s) {
  if (!Array.isArray(s.masters) || s.masters.length === 0) return "";
  const rows = s.masters.map((m) => `<tr data-master="${esc(String(m.id))}" data-role="${esc(m.role)}">
    <td><strong>${esc(String(m.id))}</strong>${m.id === s.leader ? ' <span class="chip st-Running" title="serves agents, frameworks and operators">leader</span>' : ""}</td>
    <td>${esc(m.role)}</td><td>term ${esc(String(m.term))}</td>
    <td class="mono hide-sm">${esc(m.address || "")}</td></tr>`).join("");
  return `<div class="card"><h2>Masters</h2><table id="masters"><tbody>${rows}</tbody></table></div>`;
}

function overview() {
  const s = app.state;
  const t = totals();
  const byState = countByState();
  const up = s.counts.agents_connected;
  return `<div class="grid">
    <div class="card"><h2>Agents</h2><div class="stat" data-agents-up>${up}<span class="muted"> / ${s.counts.agents}</span></div>
      <div class="muted">${s.frameworks.length} framework${s.frameworks.length === 1 ? "" : "s"} · ${s.offers_outstanding} offers out</div></div>
    <div class="card"><h2>Allocated</h2>
      ${bar(t.used.cpus_milli, t.total.cpus_milli, "cpu", `CPU ${cpus(t.used.cpus_milli)} / ${cpus(t.total.cpus_milli)}`)}
      ${bar(t.used.mem_mib, t.total.mem_mib, "mem", `mem ${mem(t.used.mem_mib)} / ${mem(t.total.mem_mib)}`)}</div>
    <div class="card"><h2>Tasks</h2>${STATES.filter((st) => byState[st]).map((st) => `<a href="#/tasks?state=${st}">${chip(st, byState[st])}</a>`).join("") || '<span class="muted">none yet</span>'}</div>
  </div>
  ${mastersCard(s)}
  ${s.jobs.map(jobCard).join("")}
  <div class="card"><h2>Agents</h2><table id="agents"><tbody>${agentRows(s.agents) || '<tr><td class="muted">No agents yet: power on a Pi.</td></tr>'}</tbody></table>${pagerHtml("agents", s.agents.length)}</div>`;
}

function agents() {
  const s = app.state;
  return `<h1>Agents</h1><div class="card"><table id="agents">
    <thead><tr><th>Agent</th><th>CPU</th><th>Memory</th><th class="hide-sm">Address</th><th>Heartbeat</th><th class="hide-sm">Attributes</th></tr></thead>
    <tbody>${s.agents.map((a) => `<tr data-agent="${esc(a.hostname)}">
      <td>${agentDot(a)} <strong>${esc(a.hostname)}</strong>${sick(a)}${drain(a)}<div class="muted mono">${esc(a.id)}</div></td>
      <td>${bar(a.allocated.cpus_milli, a.total.cpus_milli, "cpu", `${cpus(a.allocated.cpus_milli)} / ${cpus(a.total.cpus_milli)}`)}</td>
      <td>${bar(a.allocated.mem_mib, a.total.mem_mib, "mem", `${mem(a.allocated.mem_mib)} / ${mem(a.total.mem_mib)}`)}</td>
      <td class="mono hide-sm">${esc(a.address)}</td>
      <td>${esc(ago(a.last_heartbeat))}</td>
      <td class="hide-sm">${Object.entries(a.attributes).map(([k, v]) => `<span class="chip">${esc(k)}=${esc(v)}</span>`).join("")}</td>
    </tr>`).join("")}</tbody></table>${pagerHtml("agents", s.agents.length)}</div>`;
}

function frameworks() {
  const s = app.state;
  return `<h1>Frameworks</h1><div class="card"><table>
    <thead><tr><th>Framework</th><th>Role</th><th>Tasks</th><th>Allocated</th></tr></thead>
    <tbody>${s.frameworks.map((f) => `<tr>
      <td><span class="${f.connected ? "up" : "down"}">●</span> <a href="#/tasks?fw=${encodeURIComponent(f.id)}"><strong>${esc(f.name)}</strong></a><div class="muted mono">${esc(f.id)}</div>${f.webui_url ? `<div>Web UI: ${webuiLink(f.webui_url)}</div>` : ""}</td>
      <td>${esc(f.role)}${f.api === "MesosV1" ? '<div class="muted">Mesos v1 API</div>' : ""}</td>
      <td>${Object.entries(f.tasks_by_state).map(([st, n]) => chip(st, n)).join("")}</td>
      <td class="mono">${cpus(f.allocated.cpus_milli)} cpus, ${mem(f.allocated.mem_mib)}</td>
    </tr>`).join("") || '<tr><td class="muted">No frameworks subscribed.</td></tr>'}</tbody></table></div>`;
}

// The service framework's services (/api/v1/services): each instance's host, port and health.
const HEALTH_CLASS = { healthy: "up", starting: "sick", unhealthy: "down", gone: "muted" };
function services() {
  const list = app.state.services || [];
  const rows = list.map((sv) => {
    const healthy = sv.instances.filter((i) => i.health === "healthy").length;
    const insts = sv.instances.map((i) => `<tr>
      <td class="mono"><a href="${taskHref({ framework_id: sv.framework_id, id: i.task_id })}">${esc(i.task_id)}</a></td>
      <td>${esc(i.host)}<div class="muted mono hide-sm">${esc(i.agent_id)}</div></td>
      <td class="mono">${esc(i.address ?? "")}${i.ports.length ? ":" + i.ports.map(esc).join(",") : ""}</td>
      <td><span class="${HEALTH_CLASS[i.health] || ""}">●</span> ${esc(i.health)}${i.last_failure ? `<div class="muted">${esc(i.last_failure)}</div>` : ""}</td>
    </tr>`).join("") || '<tr><td class="muted" colspan="4">No instances.</td></tr>';
    return `<div class="card"><h2>${esc(sv.name)} <span class="muted">${healthy}/${sv.instances.length} healthy · ${esc(sv.service_type)}${sv.scheduler_connected ? "" : " · scheduler away"}</span></h2>
      <table><thead><tr><th>Instance</th><th>Host</th><th>Address</th><th>Health</th></tr></thead><tbody>${insts}</tbody></table></div>`;
  }).join("");
  return `<h1>Services</h1>${rows || '<div class="card"><p class="muted">No services: add one with <code>bramble service apply FILE.toml</code>.</p></div>'}`;
}

function tasksView(route) {
  const q = route.query;
  const state = q.get("state") || "", fw = q.get("fw") || "", text = (q.get("q") || "").toLowerCase();
  const list = [...app.tasks.values()]
    .filter((t) => !state || t.state === state)
    .filter((t) => !fw || t.framework_id === fw)
    .filter((t) => !text || `${t.id} ${t.name} ${agentName(t.agent_id)}`.toLowerCase().includes(text))
    .sort((a, b) => (b.launched_at || 0) - (a.launched_at || 0));
  const shown = list.slice(0, 500);
  return `<h1>Tasks</h1>
    <div class="filters">
      <select id="f-state"><option value="">all states</option>${STATES.map((s) => `<option ${s === state ? "selected" : ""} value="${s}">${s.toUpperCase()}</option>`).join("")}</select>
      <select id="f-fw"><option value="">all frameworks</option>${app.state.frameworks.map((f) => `<option ${f.id === fw ? "selected" : ""} value="${esc(f.id)}">${esc(f.name)}</option>`).join("")}</select>
      <input id="f-q" type="search" placeholder="search id, name, agent" value="${esc(q.get("q") || "")}">
    </div>
    <div class="card"><table id="tasks">
      <thead><tr><th>Task</th><th>State</th><th class="hide-sm">Framework</th><th>Agent</th><th class="hide-sm">Resources</th><th>Time</th></tr></thead>
      <tbody>${shown.map((t) => `<tr data-task="${esc(t.id)}">
        <td><a href="${taskHref(t)}">${esc(t.id)}</a>${t.name && t.name !== t.id ? `<div class="muted">${esc(t.name)}</div>` : ""}</td>
        <td>${chip(t.state)}${t.message ? `<div class="muted">${esc(t.message)}</div>` : ""}</td>
        <td class="hide-sm">${esc(fwName(t.framework_id))}</td>
        <td>${esc(agentName(t.agent_id))}</td>
        <td class="mono hide-sm">${cpus(t.resources.cpus_milli)} cpus, ${mem(t.resources.mem_mib)}</td>
        <td>${esc(dur(t.started_at || t.launched_at, t.ended_at))}</td>
      </tr>`).join("") || '<tr><td class="muted" colspan="6">No tasks match.</td></tr>'}</tbody></table>
      ${list.length > shown.length ? `<p class="muted">${list.length - shown.length} more not shown: narrow the filters.</p>` : ""}
      ${pagerHtml("tasks", app.state.tasks.length)}</div>`;
}

function wireFilters() {
  const update = () => {
    const p = new URLSearchParams();
    for (const [id, k] of [["f-state", "state"], ["f-fw", "fw"], ["f-q", "q"]]) {
      const v = $("#" + id).value;
      if (v) p.set(k, v);
    }
    history.replaceState(null, "", `#/tasks${p.toString() ? "?" + p : ""}`);
    render();
  };
  $("#f-state").onchange = update;
  $("#f-fw").onchange = update;
  $("#f-q").oninput = update;
}

// ------------------------------------------------------------------------------------------
// The task page: details, sandbox files, and a live tail

function taskPage(main, fw, id) {
  stopFollow();
  main.innerHTML = `<p><a href="#/tasks">&larr; Tasks</a></p>
    <h1 class="mono">${esc(id)}</h1>
    <div class="card" id="task-info"></div>
    <div class="card"><h2>Output</h2>
      <div class="tabs" id="log-tabs">
        <button data-path="stdout" class="active">stdout</button><button data-path="stderr">stderr</button>
      </div>
      <pre class="log" id="log" data-path="stdout"></pre>
      <p class="muted" id="log-status"></p></div>
    <div class="card"><h2>Sandbox</h2><table id="files"><tbody><tr><td class="muted">Loading…</td></tr></tbody></table></div>`;
  taskInfo(fw, id);
  for (const b of main.querySelectorAll("#log-tabs button")) {
    b.onclick = () => showFile(fw, id, b.dataset.path);
  }
  showFile(fw, id, "stdout");
  loadFiles(fw, id);
}

function taskInfo(fw, id) {
  const t = app.tasks.get(`${fw}/${id}`);
  const el = $("#task-info");
  if (!el) return;
  if (!t) {
    el.innerHTML = `<p class="muted">The master no longer remembers this task; its sandbox may still be readable.</p>`;
    return;
  }
  const canKill = app.version?.can_kill && !TERMINAL.has(t.state);
  el.innerHTML = `<dl class="kv">
    <dt>State</dt><dd data-state="${esc(t.state)}">${chip(t.state)} ${t.reason ? `<span class="muted">${esc(t.reason)}</span>` : ""}</dd>
    ${t.message ? `<dt>Message</dt><dd>${esc(t.message)}</dd>` : ""}
    <dt>Name</dt><dd>${esc(t.name)}</dd>
    <dt>Framework</dt><dd>${esc(fwName(t.framework_id))} <span class="muted mono">${esc(t.framework_id)}</span></dd>
    <dt>Agent</dt><dd>${esc(agentName(t.agent_id))} <span class="muted mono">${esc(t.agent_id)}</span></dd>
    <dt>Resources</dt><dd class="mono">${cpus(t.resources.cpus_milli)} cpus, ${mem(t.resources.mem_mib)}</dd>
    <dt>Launched</dt><dd>${t.launched_at ? new Date(t.launched_at * 1000).toLocaleString() : ""}</dd>
    ${t.started_at ? `<dt>Running</dt><dd>${new Date(t.started_at * 1000).toLocaleString()}</dd>` : ""}
    ${t.ended_at ? `<dt>Ended</dt><dd>${new Date(t.ended_at * 1000).toLocaleString()} (${esc(dur(t.started_at || t.launched_at, t.ended_at))})</dd>` : ""}
  </dl>${canKill ? `<p><button class="danger" id="kill">Kill task</button></p>` : ""}`;
  const kill = $("#kill");
  if (kill) kill.onclick = async () => {
    if (!confirm(`Kill ${id}?`)) return;
    kill.disabled = true;
    await api(`/api/v1/tasks/${encodeURIComponent(fw)}/${encodeURIComponent(id)}/kill`, { method: "POST" });
  };
}

async function loadFiles(fw, id) {
  const tbody = $("#files tbody");
  try {
    const res = await api(`/api/v1/tasks/${encodeURIComponent(fw)}/${encodeURIComponent(id)}/files`);
    const body = await res.json();
    if (!res.ok) { tbody.innerHTML = `<tr><td class="muted">${esc(body.error)}</td></tr>`; return; }
    tbody.innerHTML = body.entries.map((e) => `<tr>
      <td class="mono">${e.is_dir ? esc(e.path) + "/" : `<a href="#" data-file="${esc(e.path)}">${esc(e.path)}</a>`}</td>
      <td class="num">${e.is_dir ? "" : num(e.size) + " B"}</td></tr>`).join("") || '<tr><td class="muted">Empty.</td></tr>';
    for (const a of tbody.querySelectorAll("a[data-file]")) {
      a.onclick = (ev) => { ev.preventDefault(); showFile(fw, id, a.dataset.file); };
    }
  } catch (e) { /* login shown */ }
}

function stopFollow() {
  if (app.follow) { app.follow.close(); app.follow = null; }
}

// Tails a sandbox file: the last 64 KiB, then whatever is appended, until the task ends.
function showFile(fw, id, path) {
  stopFollow();
  const log = $("#log"), status = $("#log-status");
  for (const b of document.querySelectorAll("#log-tabs button")) b.classList.toggle("active", b.dataset.path === path);
  log.textContent = ""; log.dataset.path = path; status.textContent = "";
  const url = `/api/v1/tasks/${encodeURIComponent(fw)}/${encodeURIComponent(id)}/files/follow?tail=65536&path=${encodeURIComponent(path)}`;
  const es = new EventSource(url);
  app.follow = es;
  es.addEventListener("data", (e) => {
    const c = JSON.parse(e.data);
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(document.createTextNode(c.data));
    if (atBottom) log.scrollTop = log.scrollHeight;
    status.textContent = `${num(c.size)} bytes${c.task_ended ? "" : " · following"}`;
  });
  es.addEventListener("eof", (e) => {
    status.textContent = `${num(JSON.parse(e.data).size)} bytes · task ended`;
    log.dataset.complete = "true";
    es.close();
  });
  es.addEventListener("error", (e) => {
    if (e.data) status.textContent = JSON.parse(e.data).error;
    else if (es.readyState === EventSource.CLOSED) status.textContent = `cannot read ${path}`;
    es.close();
  });
}

// ------------------------------------------------------------------------------------------
// The front panel (served once the display is running; hidden while it 404s)

let panelOk = null, panelAt = 0;
function wirePanel() {
  const img = $("#panel");
  img.onload = () => { panelOk = true; render(); };
  img.onerror = () => { panelOk = false; $("#panel-card").hidden = true; };
  img.src = `/api/v1/panel.png?t=${Date.now()}`;
}
function refreshPanel() {
  if (!panelOk || Date.now() - panelAt < 2000) return;
  panelAt = Date.now();
  const img = $("#panel");
  if (img) img.src = `/api/v1/panel.png?t=${panelAt}`;
}

// ------------------------------------------------------------------------------------------
// Access

function showLogin() {
  if ($("#login")) return;
  if (app.events) { app.events.close(); app.events = null; }
  stopFollow();
  const main = $("#main");
  main.innerHTML = "";
  main.append($("#login-template").content.cloneNode(true));
  $("#login").onsubmit = async (ev) => {
    ev.preventDefault();
    const body = new URLSearchParams({ token: ev.target.token.value });
    const res = await fetch("/api/v1/login", { method: "POST", body, credentials: "same-origin" });
    if (res.ok) { app.route = null; boot(); } else {
      const err = $("#login-error");
      const wait = res.headers.get("Retry-After");
      err.textContent = res.status === 429
        ? `Too many wrong tokens; try again in ${wait ?? 60} s.`
        : "That is not this master's token.";
      err.hidden = false;
    }
  };
}

$("#logout").onclick = async () => {
  await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin" });
  showLogin();
};

async function boot() {
  try {
    const res = await api("/version");
    app.version = await res.json();
    // /version is open (Mesos clients read it without credentials): ask a guarded
    // endpoint whether this browser is logged in.
    if (app.version.auth) await api("/api/v1/summary", { method: "HEAD" });
  } catch (e) { return; }
  $("#logout").hidden = !app.version.auth;
  if (panelOk === null) wirePanel();
  connectEvents();
}

window.addEventListener("hashchange", render);
boot();
