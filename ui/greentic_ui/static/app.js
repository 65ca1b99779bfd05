// greentic-deployer dashboard: live updates, the split control, actions.
// Served as a static file (the Content-Security-Policy allows no inline script). Text from the
// server is only ever put into the page with textContent or as server-rendered, escaped HTML.
"use strict";

(function () {
  const state = { events: 0, refreshes: 0, lastEventAt: 0, lastRefreshAt: 0, lastChange: null, connected: false };
  window.greenticLive = state;

  const body = document.body;
  const pageEnv = body.dataset.env || null;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  let pendingAction = null;

  // ------------------------------------------------------------------ live updates

  function setLive(text, on) {
    const el = document.getElementById("live-status");
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("off", !on);
  }

  function busy(section) {
    // a section someone is editing is not replaced under their hands
    if (section.querySelector('form[data-dirty="1"], details.lazy[open]')) return true;
    const active = document.activeElement;
    return !!(active && active !== body && section.contains(active) && active.matches("input, select, textarea"));
  }

  let refreshTimer = null;
  let refreshing = false;
  let again = false;

  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 30);
  }

  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const response = await fetch(location.href, { headers: { "X-Greentic-Live": "1" }, credentials: "same-origin" });
      if (!response.ok) return;
      const html = await response.text();
      const doc = new DOMParser().parseFromString(html, "text/html");
      const fresh = doc.querySelectorAll("[data-live][id]");
      const oldIds = Array.from(document.querySelectorAll("[data-live][id]")).map((el) => el.id).join(" ");
      const newIds = Array.from(fresh).map((el) => el.id).join(" ");
      if (oldIds !== newIds) {
        // sections appeared or went away: replace the whole page body unless someone is editing
        const main = document.getElementById("main");
        const newMain = doc.getElementById("main");
        if (main && newMain && !busy(main)) main.replaceWith(document.importNode(newMain, true));
      } else {
        fresh.forEach((el) => {
          const old = document.getElementById(el.id);
          if (old && !busy(old)) old.replaceWith(document.importNode(el, true));
        });
      }
      state.refreshes += 1;
      state.lastRefreshAt = Date.now();
      body.dataset.refreshes = String(state.refreshes);
      initForms();
      tickCountdowns();
    } catch (err) {
      // the next event retries
    } finally {
      refreshing = false;
      if (again) { again = false; scheduleRefresh(); }
    }
  }

  function connect() {
    if (!window.EventSource) return;
    const url = "/api/events" + (pageEnv ? "?env=" + encodeURIComponent(pageEnv) : "");
    const source = new EventSource(url);
    source.addEventListener("open", () => { state.connected = true; setLive("live", true); });
    source.addEventListener("error", () => { state.connected = false; setLive("reconnecting", false); });
    source.addEventListener("hello", () => { state.connected = true; setLive("live", true); });
    source.addEventListener("change", (event) => {
      let data = {};
      try { data = JSON.parse(event.data); } catch (e) { /* ignore */ }
      state.events += 1;
      state.lastEventAt = Date.now();
      state.lastChange = data;
      body.dataset.events = String(state.events);
      scheduleRefresh();
    });
    source.addEventListener("progress", (event) => {
      let data = {};
      try { data = JSON.parse(event.data); } catch (e) { return; }
      if (pendingAction && data.action_id === pendingAction) logAction(data.message, data.state);
    });
  }

  // ------------------------------------------------------------------ the split control

  function rows(form) {
    return Array.from(form.querySelectorAll(".weight-row"));
  }

  function pct(bps) {
    return (bps / 100).toFixed(2).replace(/\.?0+$/, "") + "%";
  }

  function show(form, weights) {
    rows(form).forEach((row, i) => {
      row.querySelector(".w-range").value = String(weights[i]);
      row.querySelector(".w-bps").value = String(weights[i]);
      row.querySelector(".w-pct").textContent = pct(weights[i]);
    });
    const sum = weights.reduce((a, b) => a + b, 0);
    form.querySelector(".w-sum").textContent = String(sum);
  }

  function current(form) {
    return rows(form).map((row) => parseInt(row.querySelector(".w-bps").value, 10) || 0);
  }

  // Set revision `index` to `value` (basis points, snapped to an integer in 0..10000) and share
  // what is left among the others in proportion to their weights (largest remainder), so the
  // total is always exactly 10000.
  function rebalance(weights, index, value) {
    const n = weights.length;
    const v = Math.max(0, Math.min(10000, Math.round(Number(value) || 0)));
    const out = weights.slice();
    out[index] = v;
    if (n === 1) { out[0] = 10000; return out; }
    const others = [];
    for (let i = 0; i < n; i++) if (i !== index) others.push(i);
    const left = 10000 - v;
    let base = others.reduce((a, i) => a + weights[i], 0);
    const shares = others.map((i) => (base > 0 ? weights[i] : 1));
    base = shares.reduce((a, b) => a + b, 0);
    const exact = shares.map((s) => (left * s) / base);
    const floors = exact.map(Math.floor);
    let rest = left - floors.reduce((a, b) => a + b, 0);
    const order = exact.map((x, k) => [x - Math.floor(x), k]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    for (let j = 0; j < order.length && rest > 0; j++, rest--) floors[order[j][1]] += 1;
    others.forEach((i, k) => { out[i] = floors[k]; });
    return out;
  }

  function initForms() {
    document.querySelectorAll("form.split-form").forEach((form) => {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.dataset.initial = JSON.stringify(current(form));
      const weights = current(form);
      if (weights.reduce((a, b) => a + b, 0) !== 10000) show(form, rebalance(weights, 0, weights[0] || (weights.length === 1 ? 10000 : 0)));
    });
  }

  document.addEventListener("input", (event) => {
    const input = event.target;
    if (!input.matches || !input.matches(".w-range, .w-bps")) return;
    const form = input.closest("form.split-form");
    const index = rows(form).indexOf(input.closest(".weight-row"));
    form.dataset.dirty = "1";
    show(form, rebalance(current(form).map((w, i) => (i === index ? w : w)), index, input.value));
  });

  document.addEventListener("change", (event) => {
    const input = event.target;
    if (input.matches && input.matches("form.revision-filter select")) {
      // the revision table's lifecycle filter: a plain GET form, sent as soon as it is chosen
      input.form.requestSubmit();
      return;
    }
    if (input.matches && input.matches(".w-bps")) {
      const form = input.closest("form.split-form");
      show(form, rebalance(current(form), rows(form).indexOf(input.closest(".weight-row")), input.value));
    }
  });

  document.addEventListener("reset", (event) => {
    const form = event.target;
    if (!form.matches("form.split-form")) return;
    event.preventDefault();
    delete form.dataset.dirty;
    show(form, JSON.parse(form.dataset.initial || "[]"));
    scheduleRefresh();
  });

  // ------------------------------------------------------------------ confirmation and actions

  function confirmAction(text) {
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  function logAction(message, status) {
    const log = document.getElementById("action-log");
    const item = document.createElement("li");
    item.textContent = message;
    if (status) item.className = status;
    log.appendChild(item);
  }

  function startAction(title) {
    const box = document.getElementById("action-status");
    document.getElementById("action-title").textContent = title;
    document.getElementById("action-log").replaceChildren();
    box.hidden = false;
    box.dataset.state = "running";
    pendingAction = Math.random().toString(36).slice(2) + Date.now().toString(36);
    return pendingAction;
  }

  async function post(url, payload, title) {
    const actionId = startAction(title);
    const box = document.getElementById("action-status");
    let doc = {};
    try {
      const response = await fetch(url, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(Object.assign({ action_id: actionId }, payload)),
      });
      doc = await response.json().catch(() => ({ ok: false, message: "HTTP " + response.status }));
      if (!response.ok || !doc.ok) doc.ok = false;
    } catch (err) {
      doc = { ok: false, message: String(err) };
    }
    pendingAction = null;
    if (doc.ok) {
      box.dataset.state = "done";
      logAction("done" + (doc.generation !== undefined ? " (generation " + doc.generation + ")" : "")
        + (doc.phase ? ": rollout " + doc.phase : "") + (doc.lifecycle ? ": " + doc.lifecycle : ""), "done");
    } else {
      box.dataset.state = "error";
      logAction("error: " + (doc.message || "failed") + (doc.hint ? " (hint: " + doc.hint + ")" : ""), "error");
    }
    scheduleRefresh();
    return doc;
  }

  function enc(value) {
    return encodeURIComponent(value);
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!form.matches("form.split-form")) return;
    event.preventDefault();
    const weights = {};
    const parts = [];
    rows(form).forEach((row) => {
      const bps = parseInt(row.querySelector(".w-bps").value, 10) || 0;
      const label = row.querySelector("label").textContent.trim();
      if (bps > 0) weights[row.dataset.rid] = bps;
      parts.push(label + " " + pct(bps));
    });
    const text = "Move the traffic of " + form.dataset.bundle + " to: " + parts.join(", ") + "?";
    if (!(await confirmAction(text))) return;
    const doc = await post("/api/environments/" + enc(form.dataset.env) + "/deployments/" + enc(form.dataset.deployment) + "/traffic",
      { weights: weights }, "traffic set " + form.dataset.bundle);
    if (doc.ok) { delete form.dataset.dirty; scheduleRefresh(); }
  });

  document.addEventListener("click", async (event) => {
    const button = event.target.closest ? event.target.closest("button[data-action], button[data-dismiss]") : null;
    if (!button) return;
    if (button.dataset.dismiss) {
      document.getElementById(button.dataset.dismiss).hidden = true;
      return;
    }
    const action = button.dataset.action;
    if (action === "rollback") {
      const form = button.closest("form.split-form");
      if (!(await confirmAction("Roll the split of " + form.dataset.bundle + " back by one change?"))) return;
      const doc = await post("/api/environments/" + enc(form.dataset.env) + "/deployments/" + enc(form.dataset.deployment) + "/rollback",
        { steps: 1 }, "traffic rollback " + form.dataset.bundle);
      if (doc.ok) delete form.dataset.dirty;
    } else if (action === "drain" || action === "archive") {
      const rid = button.dataset.rid;
      const text = action === "drain"
        ? "Drain revision " + rid + "? It stops after its in-flight requests."
        : "Archive revision " + rid + "? What the provider created for it is removed.";
      if (!(await confirmAction(text))) return;
      await post("/api/environments/" + enc(button.dataset.env || pageEnv) + "/revisions/" + enc(rid) + "/" + action, {},
        action + " " + rid);
    } else if (action === "rollout") {
      const box = button.closest(".rollout-actions");
      const verb = button.dataset.verb;
      const payload = {};
      if (verb === "abort") {
        const reason = box.querySelector(".abort-reason");
        if (reason && reason.value.trim()) payload.reason = reason.value.trim();
      }
      const moves = { abort: "Abort the rollout of " + box.dataset.bundle + "? Traffic goes back to the stable revision(s).",
        promote: "Promote the rollout of " + box.dataset.bundle + "? The target split is set now." };
      if (moves[verb] && !(await confirmAction(moves[verb]))) return;
      await post("/api/environments/" + enc(box.dataset.env) + "/deployments/" + enc(box.dataset.deployment) + "/rollout/" + verb,
        payload, "rollout " + verb + " " + box.dataset.bundle);
    }
  });

  // ------------------------------------------------------------------ lazy details (large documents)

  document.addEventListener("toggle", async (event) => {
    const details = event.target;
    if (!details.matches || !details.matches("details.lazy") || !details.open) return;
    const pre = details.querySelector("pre");
    try {
      const response = await fetch(details.dataset.src, { credentials: "same-origin" });
      const doc = await response.json();
      const value = doc.runtime_config;
      pre.textContent = value ? JSON.stringify(value, null, 2) : (doc.ok ? "nothing is live" : doc.message);
    } catch (err) {
      pre.textContent = String(err);
    }
  }, true);

  // ------------------------------------------------------------------ countdowns

  function tickCountdowns() {
    document.querySelectorAll(".countdown[data-due]").forEach((el) => {
      const due = Date.parse(el.dataset.due);
      if (isNaN(due)) return;
      const left = Math.round((due - Date.now()) / 1000);
      el.textContent = left > 0 ? "(in " + left + " s)" : "(due)";
    });
  }

  initForms();
  tickCountdowns();
  setInterval(tickCountdowns, 1000);
  connect();
})();
