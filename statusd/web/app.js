// statusd status page: loads the JSON reports, then follows /v1/events (Server-Sent Events).
// Auth is the HttpOnly cookie set by POST /login; every request is same-origin.
"use strict";

const RECENT = 50;
const REFRESH_MS = 10000; // staleness grows with time alone: re-read the reports periodically
let refreshTimer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child instanceof Node) node.append(child);
    else node.append(child === null || child === undefined ? "" : String(child)); // text, never HTML
  }
  return node;
}

async function getJSON(path) {
  const resp = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (resp.status === 401) { window.location.assign("/"); throw new Error("signed out"); }
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${(s / 3600).toFixed(1)}h`;
  return `${(s / 86400).toFixed(1)}d`;
}

function shortTime(iso) {
  return iso.replace("T", " ").slice(0, 19);
}

function renderSummary(summary) {
  const counts = summary.counts;
  const states = [...new Set(Object.values(counts).flatMap((byState) => Object.keys(byState)))].sort();
  const table = document.getElementById("counts");
  const head = el("tr", {}, el("th", {}, "kind"));
  states.forEach((s) => head.append(el("th", { class: `num state-${s}` }, s)));
  head.append(el("th", { class: "num" }, "total"));
  table.tHead.replaceChildren(head);
  const rows = Object.entries(counts).map(([kind, byState]) => {
    const tr = el("tr", { "data-kind": kind }, el("td", {}, kind));
    let total = 0;
    states.forEach((s) => { const n = byState[s] || 0; total += n; tr.append(el("td", { class: "num", "data-state": s }, n)); });
    tr.append(el("td", { class: "num" }, total));
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
  const sync = summary.sync || {};
  const stream = summary.stream || {};
  document.getElementById("backlog").textContent =
    `sync backlog ${sync.depth ?? "?"} (dead ${sync.dead_letters ?? "?"})` +
    ` · stream lag ${stream.lag ?? "?"}, pending ${stream.pending ?? "?"}`;
}

function renderStale(report) {
  const rows = report.items.map((item) => el("tr", { "data-id": item.id, "data-state": item.state },
    el("td", {}, el("a", { href: `/workloads/${encodeURIComponent(item.id)}` }, item.id)), el("td", {}, item.kind),
    el("td", { class: `state-${item.state}` }, item.state), el("td", {}, item.reason),
    el("td", { class: "num" }, duration(item.stale_for_s)), el("td", {}, item.last_seen_at ? shortTime(item.last_seen_at) : "never"),
    el("td", { class: "num" }, item.poll_failures), el("td", {}, item.last_poll_error || ""),
    el("td", {}, Object.entries(item.labels).map(([k, v]) => `${k}=${v}`).join(" "))));
  document.querySelector("#stale-table tbody").replaceChildren(...rows);
  const badge = document.getElementById("stale-count");
  badge.textContent = report.count;
  badge.classList.toggle("zero", report.count === 0);
  document.getElementById("stale-empty").hidden = report.count !== 0;
}

function transitionItem(t, fresh) {
  const link = el("a", { href: `/workloads/${encodeURIComponent(t.workload_id)}` }, t.workload_id);
  return el("li", { "data-id": t.id, "data-workload": t.workload_id, "data-to": t.to, class: fresh ? "new" : "" },
    `${shortTime(t.recorded_at)}  ${t.kind} `, link,
    `: ${t.from} → ${t.to} (${t.source}${t.reason ? ": " + t.reason : ""})`);
}

async function refreshReports() {
  const [summary, stale] = await Promise.all([getJSON("/v1/reports/summary"), getJSON("/v1/reports/stale")]);
  renderSummary(summary);
  renderStale(stale);
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function scheduleRefresh(delay) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    refreshReports().catch((err) => console.warn(err)).finally(() => scheduleRefresh(REFRESH_MS));
  }, delay);
}

function follow(lastId) {
  const live = document.getElementById("live");
  // EventSource resends Last-Event-ID by itself when it reconnects: no gaps after a blip.
  const source = new EventSource(`/v1/events?last_event_id=${lastId}`);
  source.onopen = () => { live.dataset.state = "open"; live.textContent = "live"; };
  source.onerror = () => { live.dataset.state = "error"; live.textContent = "reconnecting…"; };
  source.addEventListener("transition", (event) => {
    const t = JSON.parse(event.data);
    const list = document.getElementById("transitions");
    list.prepend(transitionItem(t, true));
    while (list.children.length > RECENT) list.lastElementChild.remove();
    scheduleRefresh(250); // a transition changes counts and the stale report: re-read soon
  });
}

async function start() {
  const recent = await getJSON(`/v1/reports/transitions?limit=${RECENT}`);
  document.getElementById("transitions").replaceChildren(...recent.items.map((t) => transitionItem(t, false)));
  await refreshReports();
  follow(recent.last_id);
  scheduleRefresh(REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => { start().catch((err) => console.error(err)); });
