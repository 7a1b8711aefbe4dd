// One workload's page: GET /v1/reports/workloads/{id}, drawn as facts, an SVG timeline of state
// bands, tables of transitions and refused observations, polls and sync. Follows /v1/events for
// this workload and re-reads the story on each change (no reload).
"use strict";

(() => {
  const { el, svg, getJSON, duration, shortTime, clock, labelsText, marks, follow, followBanners } = window.statusd;
  const WIDTH = 1000;
  const HEIGHT = 64;
  const AXIS = 18;
  const workloadId = decodeURIComponent(window.location.pathname.split("/")[2] || "");
  let story = null;
  let refreshTimer = null;

  function facts(target, pairs) {
    document.getElementById(target).replaceChildren(...pairs.flatMap(([k, v]) =>
      [el("dt", {}, k), el("dd", { "data-fact": k }, v === null || v === undefined || v === "" ? "—" : v)]));
  }

  function bandLabel(b, now) {
    const end = b.end ? new Date(b.end) : now;
    const span = duration((end - new Date(b.start)) / 1000);
    return `${b.state} from ${shortTime(b.start)} to ${b.end ? shortTime(b.end) : "now"} (${span})`;
  }

  function drawTimeline(bands) {
    const box = document.getElementById("timeline");
    const note = document.getElementById("timeline-note");
    if (!bands.length) {
      box.replaceChildren();
      note.textContent = "No transitions yet: nothing to draw.";
      return;
    }
    const now = new Date();
    const t0 = new Date(bands[0].start).getTime();
    const last = bands[bands.length - 1];
    const t1 = Math.max(last.end ? new Date(last.end).getTime() : now.getTime(), t0 + 1000); // ends at deregistration
    const x = (t) => ((t - t0) / (t1 - t0)) * WIDTH;
    const group = svg("g", { role: "list", "aria-label": "state bands, oldest first" });
    bands.forEach((b, index) => {
      const start = x(new Date(b.start).getTime());
      const end = x(b.end ? new Date(b.end).getTime() : t1);
      const width = Math.max(end - start, 2); // a state held for a blink still shows
      const label = bandLabel(b, now);
      const band = svg("g", { class: "band", role: "listitem", "aria-label": label, "data-state": b.state, "data-index": index },
        svg("title", {}, label),
        svg("rect", { class: `s-${b.state}`, x: start.toFixed(2), y: 0, width: width.toFixed(2), height: HEIGHT }));
      if (width > 70) {
        band.append(svg("text", { class: "band-text", x: (start + 4).toFixed(2), y: HEIGHT / 2 + 4, "aria-hidden": "true" }, b.state));
      }
      group.append(band);
    });
    const axis = svg("g", { class: "axis", "aria-hidden": "true" },
      svg("text", { x: 0, y: HEIGHT + 14 }, shortTime(bands[0].start)),
      svg("text", { x: WIDTH, y: HEIGHT + 14, "text-anchor": "end" },
        last.end ? `deregistered ${shortTime(last.end)}` : `now (${clock(now)} UTC)`));
    for (const f of [0.25, 0.5, 0.75]) { // a few ticks so a band's time can be read off the axis
      const t = new Date(t0 + f * (t1 - t0));
      axis.append(svg("line", { class: "tick", x1: f * WIDTH, x2: f * WIDTH, y1: HEIGHT, y2: HEIGHT + 4 }),
        svg("text", { x: f * WIDTH, y: HEIGHT + 14, "text-anchor": "middle" }, clock(t)));
    }
    const picture = svg("svg", { id: "timeline-svg", viewBox: `0 0 ${WIDTH} ${HEIGHT + AXIS}`, role: "img",
      "aria-label": `Timeline of ${workloadId}: ${bands.map((b) => b.state).join(", then ")}` },
      svg("title", {}, `State timeline of ${workloadId}`), group, axis);
    box.replaceChildren(picture);
    note.textContent = story.transitions_complete ? "" : "Only the newest transitions are drawn; older history is in GET /v1/workloads/{id}/transitions.";
  }

  function render(s) {
    story = s;
    const w = s.workload;
    document.title = `statusd: ${w.id}`;
    document.getElementById("w-id").textContent = w.id;
    const state = document.getElementById("w-state");
    state.textContent = w.state;
    state.className = `state state-pill s-${w.state}`;
    state.dataset.state = w.state;
    document.getElementById("w-marks").replaceChildren(...marks(w));
    const gone = document.getElementById("w-deregistered");
    gone.hidden = !s.deregistered_at;
    gone.textContent = s.deregistered_at
      ? `Deregistered at ${shortTime(s.deregistered_at)}: statusd no longer tracks it; its history is kept.` : "";
    facts("w-facts", [["kind", w.kind], ["state since", shortTime(w.state_changed_at)],
      ["last seen", shortTime(w.last_seen_at)], ["last seq", w.last_seq], ["labels", labelsText(w.labels)],
      ["status url", w.status_url], ["registered", shortTime(w.created_at)], ["generation", w.generation], ["parent", w.parent]]);
    drawTimeline(s.timeline);

    document.querySelector("#transitions-table tbody").replaceChildren(...[...s.transitions].reverse().map((t) =>
      el("tr", { "data-id": t.id, "data-to": t.to },
        el("td", { class: "num" }, t.id), el("td", {}, shortTime(t.recorded_at)),
        el("td", { class: `state-${t.from}` }, t.from), el("td", { class: `state-${t.to}` }, t.to),
        el("td", {}, t.source), el("td", {}, t.reason || ""), el("td", {}, t.actor || ""),
        el("td", { class: "num" }, t.seq ?? ""), el("td", {}, shortTime(t.observed_at)))));
    document.getElementById("transitions-count").textContent = `${s.transitions.length}${s.transitions_complete ? "" : "+"}`;
    document.getElementById("transitions-empty").hidden = s.transitions.length !== 0;

    document.querySelector("#refused-table tbody").replaceChildren(...s.refused.map((r) =>
      el("tr", { "data-id": r.id },
        el("td", {}, shortTime(r.recorded_at)), el("td", {}, r.current_state), el("td", {}, r.requested_state),
        el("td", {}, r.source), el("td", {}, r.rule), el("td", {}, r.reason || ""), el("td", {}, r.actor || ""),
        el("td", { class: "num" }, r.seq ?? ""))));
    document.getElementById("refused-count").textContent = `${s.refused.length}${s.refused_complete ? "" : "+"}`;
    document.getElementById("refused-empty").hidden = s.refused.length !== 0;

    const p = s.polls;
    facts("polls", [["status url", p.status_url || "none (push only)"], ["last poll", p.last_poll_at ? shortTime(p.last_poll_at) : "never"],
      ["failures in a row", p.poll_failures], ["last poll error", p.last_poll_error], ["transitions from polls", p.transitions_from_polls]]);

    const sync = s.sync;
    const main = sync.targets.main || { pending: 0, synced: 0, dead: 0, last_synced_at: null };
    const alert = sync.targets.alert;
    const pairs = [["synced", sync.synced === null ? "n/a: no main API configured" : sync.synced ? "yes: the main DB holds the newest transition" : "no: the main DB is behind"],
      ["main: pending", main.pending], ["main: dead", main.dead], ["main: synced rows", main.synced],
      ["main: last synced", shortTime(main.last_synced_at)]];
    if (alert) pairs.push(["alerts: pending / dead / sent", `${alert.pending} / ${alert.dead} / ${alert.synced}`]);
    if (sync.last_error) pairs.push(["last error", `${sync.last_error.target} (${sync.last_error.status}, ${sync.last_error.attempts} attempts): ${sync.last_error.error}`]);
    facts("sync", pairs);
    document.getElementById("sync").dataset.synced = String(sync.synced);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  async function refresh() {
    render(await getJSON(`/v1/reports/workloads/${encodeURIComponent(workloadId)}`));
  }

  let dueAt = Infinity;
  function soon(ms) {
    // Throttle, not debounce: a burst of events must not keep pushing the re-read away.
    if (Date.now() + ms >= dueAt) return;
    clearTimeout(refreshTimer);
    dueAt = Date.now() + ms;
    refreshTimer = setTimeout(() => {
      dueAt = Infinity;
      refresh().catch((err) => console.warn(err)).finally(() => soon(15000)); // "now" moves on
    }, ms);
  }

  async function start() {
    await refresh();
    follow(`workload_id=${encodeURIComponent(workloadId)}`, () => soon(200), () => soon(200));
    followBanners();
    soon(15000);
  }

  document.addEventListener("DOMContentLoaded", () => { start().catch((err) => console.error(err)); });
})();
