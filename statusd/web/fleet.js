// The fleet list: GET /v1/workloads with the filters in the address bar (so a filtered view can
// be shared), keyset pages (next/previous keep a stack of cursors), live rows over /v1/events.
"use strict";

(() => {
  const { el, getJSON, HttpError, shortTime, labelsText, workloadHref, marks, follow, followBanners } = window.statusd;
  const PAGE = 50; // rows per page unless the address says ?limit=
  const REFRESH_MS = 15000; // staleness grows with time alone: re-read the page periodically
  const form = () => document.getElementById("filters");
  let cursors = [null]; // cursors[i] opens page i; the last one is the page shown
  let nextCursor = null;
  let refreshTimer = null;
  let loading = 0;

  function filterParams() {
    const f = form();
    const params = new URLSearchParams();
    const search = f.elements.id_prefix.value.trim();
    if (search) params.set("id_prefix", search);
    for (const name of ["kind", "state", "stale"]) {
      if (f.elements[name].value) params.set(name, f.elements[name].value);
    }
    for (const label of f.elements.label.value.trim().split(/\s+/).filter(Boolean)) {
      params.append("label", label);
    }
    return params;
  }

  function fillFromAddress() {
    const params = new URLSearchParams(window.location.search);
    const f = form();
    f.elements.id_prefix.value = params.get("id_prefix") || "";
    for (const name of ["kind", "state", "stale"]) f.elements[name].value = params.get(name) || "";
    f.elements.label.value = params.getAll("label").join(" ");
  }

  function row(w) {
    return el("tr", { "data-id": w.id, "data-state": w.state, "data-kind": w.kind, "data-stale": String(w.stale) },
      el("td", {}, el("a", { href: workloadHref(w.id) }, w.id)),
      el("td", {}, w.kind),
      el("td", { class: `state state-${w.state}` }, w.state),
      el("td", { class: "marks" }, ...marks(w)),
      el("td", {}, labelsText(w.labels)),
      el("td", {}, shortTime(w.last_seen_at)),
      el("td", {}, shortTime(w.state_changed_at)));
  }

  async function load() {
    const ticket = ++loading; // a slow answer to an older query must not overwrite a newer one
    const params = filterParams();
    const limit = new URLSearchParams(window.location.search).get("limit");
    if (limit) params.set("limit", limit); // kept in the address as given
    const shareable = params.toString();
    window.history.replaceState(null, "", `/workloads${shareable ? "?" + shareable : ""}`);
    if (!limit) params.set("limit", String(PAGE));
    const cursor = cursors[cursors.length - 1];
    if (cursor) params.set("cursor", cursor);
    const error = document.getElementById("fleet-error");
    let page;
    try {
      page = await getJSON(`/v1/workloads?${params}`);
    } catch (err) {
      if (ticket !== loading) return;
      if (err instanceof HttpError && err.status === 400) {
        error.textContent = `Filter not understood: ${err.message}`;
        error.hidden = false;
        document.querySelector("#fleet-table tbody").replaceChildren();
        return;
      }
      throw err;
    }
    if (ticket !== loading) return;
    error.hidden = true;
    document.querySelector("#fleet-table tbody").replaceChildren(...page.items.map(row));
    document.getElementById("fleet-empty").hidden = page.items.length !== 0;
    nextCursor = page.next_cursor;
    document.getElementById("next").disabled = !nextCursor;
    document.getElementById("prev").disabled = cursors.length === 1;
    document.getElementById("page-no").textContent = `page ${cursors.length}`;
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  function reload(fromFirstPage) {
    if (fromFirstPage) cursors = [null];
    clearTimeout(refreshTimer);
    dueAt = Infinity;
    load().catch((err) => console.warn(err)).finally(() => {
      soon(REFRESH_MS);
    });
  }

  let dueAt = Infinity;
  function soon(ms) {
    // Throttle, not debounce: under a steady stream of events a debounce would never fire.
    if (Date.now() + ms >= dueAt) return;
    clearTimeout(refreshTimer);
    dueAt = Date.now() + ms;
    refreshTimer = setTimeout(() => { dueAt = Infinity; reload(false); }, ms);
  }

  function onTransition(t) {
    // Show the change on its row at once, then re-read the page (filters may now exclude it).
    const tr = [...document.querySelectorAll("#fleet-table tbody tr")].find((r) => r.dataset.id === t.workload_id);
    if (tr) {
      tr.dataset.state = t.to;
      const cell = tr.querySelector("td.state");
      cell.textContent = t.to;
      cell.className = `state state-${t.to}`;
      tr.classList.add("changed");
    }
    soon(400);
  }

  async function fillOptions() {
    // The enums come from the OpenAPI document: one source of truth for kinds and states.
    const doc = await getJSON("/v1/openapi.json");
    const schemas = doc.components.schemas;
    for (const [id, name] of [["f-kind", "Kind"], ["f-state", "State"]]) {
      const select = document.getElementById(id);
      select.append(...schemas[name].enum.map((v) => el("option", { value: v }, v)));
    }
  }

  async function start() {
    await fillOptions();
    fillFromAddress();
    let typing = null;
    form().addEventListener("submit", (event) => { event.preventDefault(); reload(true); });
    form().addEventListener("change", (event) => { if (event.target.tagName === "SELECT") reload(true); });
    document.getElementById("f-search").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => reload(true), 250);
    });
    document.getElementById("f-clear").addEventListener("click", () => { form().reset(); reload(true); });
    document.getElementById("next").addEventListener("click", () => {
      if (nextCursor) { cursors.push(nextCursor); reload(false); }
    });
    document.getElementById("prev").addEventListener("click", () => {
      if (cursors.length > 1) { cursors.pop(); reload(false); }
    });
    reload(true);
    follow("", onTransition, () => soon(200));
    followBanners();
  }

  document.addEventListener("DOMContentLoaded", () => { start().catch((err) => console.error(err)); });
})();
