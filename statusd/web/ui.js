// Shared by the workload views (fleet list, workload page, overview extras): DOM helpers, JSON
// reads with the page cookie, and the banners about statusd's own health. One namespace
// (window.statusd) so it can sit next to app.js, which keeps its own helpers.
"use strict";

window.statusd = (() => {
  const SVG = "http://www.w3.org/2000/svg";

  function fill(node, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.setAttribute("class", v); else node.setAttribute(k, v);
    }
    for (const child of children) {
      if (child instanceof Node) node.append(child);
      else node.append(child === null || child === undefined ? "" : String(child)); // text, never HTML
    }
    return node;
  }
  const el = (tag, attrs, ...children) => fill(document.createElement(tag), attrs, children);
  const svg = (tag, attrs, ...children) => fill(document.createElementNS(SVG, tag), attrs, children);

  class HttpError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  async function getJSON(path) {
    const resp = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (resp.status === 401) { window.location.assign("/"); throw new HttpError(401, null); }
    const body = await resp.json().catch(() => null);
    if (!resp.ok) throw new HttpError(resp.status, body);
    return body;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 120) return `${s}s`;
    if (s < 7200) return `${Math.round(s / 60)}m`;
    if (s < 172800) return `${(s / 3600).toFixed(1)}h`;
    return `${(s / 86400).toFixed(1)}d`;
  }
  const shortTime = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) : "never");
  const clock = (date) => date.toISOString().slice(11, 16);
  const labelsText = (labels) => Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`).join(" ");
  const workloadHref = (id) => `/workloads/${encodeURIComponent(id)}`;

  // Marks a workload carries: `flapping`, `silenced` and `suppressed_by` are absent from older
  // servers (= false, null). A suppressed workload links to the parent holding its alerts.
  function marks(w) {
    const found = [];
    if (w.stale) found.push("stale");
    if (w.flapping === true) found.push("flapping");
    if (w.silenced === true) found.push("silenced");
    const shown = found.map((m) => el("span", { class: `mark mark-${m}`, "data-mark": m }, m));
    if (w.suppressed_by) {
      shown.push(el("a", { class: "mark mark-suppressed", "data-mark": "suppressed",
        href: workloadHref(w.suppressed_by), title: "its parent is down: its alerts are held" },
        `suppressed by ${w.suppressed_by}`));
    }
    return shown;
  }

  function banner(kind, text) {
    return el("div", { class: `banner banner-${kind}`, role: "alert", "data-banner": kind }, text);
  }

  async function refreshBanners() {
    const box = document.getElementById("banners");
    if (!box) return;
    const watch = await getJSON("/v1/reports/selfwatch");
    const shown = [];
    const d = watch.disruption;
    if (d.active) {
      shown.push(banner("disruption",
        `Disruption mode${d.since ? " since " + shortTime(d.since) : ""}: ${d.stale} of ${d.tracked} ` +
        "tracked workloads went silent at once. That is more likely statusd's or the network's " +
        "trouble than theirs: check statusd and the network before paging workload owners."));
    }
    const s = watch.sweeper;
    if (s.stalled) {
      shown.push(banner("sweeper",
        s.last_success_at
          ? `Sweeper stalled: no sweep finished for ${duration(s.seconds_since_success)} ` +
            `(last at ${shortTime(s.last_success_at)}). Silent workloads are not being polled or ` +
            "marked UNREACHABLE/LOST: states here may be out of date."
          : "Sweeper stalled: no sweep has ever finished. Silent workloads are not being polled " +
            "or marked UNREACHABLE/LOST: states here may be out of date."));
    }
    box.replaceChildren(...shown);
  }

  function followBanners(everyMs) {
    const run = () => refreshBanners().catch((err) => console.warn(err));
    run();
    setInterval(run, everyMs || 15000);
  }

  // Follow /v1/events (SSE) and call onTransition for each; shows the state in #live.
  // onOpen runs on every (re)connect: a change made just before the stream opened is re-read then.
  function follow(query, onTransition, onOpen) {
    const live = document.getElementById("live");
    const source = new EventSource(`/v1/events${query ? "?" + query : ""}`);
    source.onopen = () => {
      if (live) { live.dataset.state = "open"; live.textContent = "live"; }
      if (onOpen) onOpen();
    };
    source.onerror = () => { if (live) { live.dataset.state = "error"; live.textContent = "reconnecting…"; } };
    source.addEventListener("transition", (event) => onTransition(JSON.parse(event.data)));
    return source;
  }

  return { el, svg, getJSON, HttpError, duration, shortTime, clock, labelsText, workloadHref,
    marks, refreshBanners, followBanners, follow };
})();
