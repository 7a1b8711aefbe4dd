// The overview page's workload extras: banners about statusd's own health and the fleet picture
// (counts by state over the last hour, from GET /v1/reports/history), drawn as stacked SVG bars.
"use strict";

(() => {
  const { el, svg, getJSON, clock, followBanners } = window.statusd;
  const WIDTH = 1000;
  const HEIGHT = 160;
  const AXIS = 18;

  function drawPicture(history) {
    const box = document.getElementById("fleet-picture");
    const samples = history.samples;
    const states = history.states;
    const totals = samples.map((s) => Object.values(s.counts).reduce((a, b) => a + b, 0));
    const top = Math.max(1, ...totals);
    const slot = WIDTH / samples.length;
    const bars = svg("g", { role: "list", "aria-label": "workloads by state, one bar per sample, oldest first" });
    samples.forEach((sample, i) => {
      const at = new Date(sample.at);
      const parts = states.filter((s) => sample.counts[s]).map((s) => `${s} ${sample.counts[s]}`);
      const label = `${clock(at)} UTC: ${parts.length ? parts.join(", ") : "no workloads"}`;
      const bar = svg("g", { class: "bar", role: "listitem", "aria-label": label, "data-at": sample.at }, svg("title", {}, label));
      let y = HEIGHT;
      for (const state of states) {
        const n = sample.counts[state] || 0;
        if (!n) continue;
        const h = (n / top) * HEIGHT;
        y -= h;
        bar.append(svg("rect", { class: `s-${state}`, "data-state": state, "data-count": n,
          x: (i * slot + 0.5).toFixed(2), y: y.toFixed(2), width: Math.max(slot - 1, 1).toFixed(2), height: h.toFixed(2) }));
      }
      bars.append(bar);
    });
    const first = new Date(samples[0].at);
    const axis = svg("g", { class: "axis", "aria-hidden": "true" },
      svg("text", { x: 0, y: HEIGHT + 14 }, `${clock(first)} UTC`),
      svg("text", { x: WIDTH, y: HEIGHT + 14, "text-anchor": "end" }, "now"),
      svg("text", { x: 4, y: 12 }, `${top}`));
    box.replaceChildren(svg("svg", { id: "fleet-picture-svg", viewBox: `0 0 ${WIDTH} ${HEIGHT + AXIS}`, role: "img",
      "aria-label": `Workloads by state over the last ${Math.round(history.window_s / 60)} minutes` },
      svg("title", {}, "Workloads by state over time"), bars, axis));
    const now = samples[samples.length - 1].counts;
    document.getElementById("fleet-legend").replaceChildren(...states.map((s) =>
      el("li", { "data-state": s }, el("span", { class: `swatch s-${s}`, "aria-hidden": "true" }), `${s} ${now[s] || 0}`)));
  }

  async function refreshPicture() {
    drawPicture(await getJSON("/v1/reports/history?window=1h&step=1m"));
  }

  function start() {
    const run = () => refreshPicture().catch((err) => console.warn(err));
    run();
    setInterval(run, 30000);
    followBanners();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
