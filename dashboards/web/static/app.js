// rlguard live dashboard: loads /api/history, then follows /api/stream (server-sent events).
// No framework, no CDN: uPlot (vendored) draws the charts; markers are drawn in a draw hook.
"use strict";
(() => {
  const MAIN = ["reward", "kl", "perplexity", "response_length"];
  const CONSTRAINTS = ["kl_coef", "clip_range", "lr"];
  const TOKEN_KEY = "rlguard.control.token";
  const COLORS = { live: "#2563eb", rolled: "#b4b9c4", warning: "#f59e0b", critical: "#dc2626",
                   rollback: "#7c3aed", halt: "#991b1b", nan: "#be123c", healthy: "#16a34a",
                   pending: "#d97706", suspect: "#dc2626" };

  const st = {
    snap: null,            // the last /api/history payload, kept current by the stream
    charts: {},            // metric -> {u, el, dirty}
    markers: {},           // metric -> markers drawn last time (for tests and tooltips)
    seq: 0, maxPoints: 800, es: null, reloadTimer: null, live: false, loads: 0,
  };
  window.rlguardDashboard = st;

  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  };
  const num = (v) => typeof v === "number" ? v : v === "NaN" ? NaN : v === "Infinity" ? Infinity
    : v === "-Infinity" ? -Infinity : null;
  const fmt = (v) => {
    v = num(v);
    if (v === null) return "-";
    if (!Number.isFinite(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3).replace(/\.?0+e/, "e") : String(+v.toPrecision(5));
  };
  const clock = (t) => t ? new Date(t * 1000).toLocaleTimeString() : "";

  // ------------------------------------------------------------------ token & control API

  function takeTokenFromFragment() {
    const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      // Out of the address bar (and history), so it is not shared by copy-paste.
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function askToken() {
    const t = window.prompt("Control token (the contents of RUN/control.token):");
    if (t && t.trim()) sessionStorage.setItem(TOKEN_KEY, t.trim());
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function toast(text, isError) {
    const t = $("#toast");
    t.textContent = text; t.className = "toast" + (isError ? " error" : ""); t.hidden = false;
    clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
  }

  async function control(endpoint, body, confirmText) {
    if (confirmText && !window.confirm(confirmText)) return;
    const token = sessionStorage.getItem(TOKEN_KEY) || askToken();
    if (!token) { toast("No control token: nothing sent", true); return; }
    try {
      const r = await fetch(endpoint, { method: "POST", body: JSON.stringify(body || {}),
        headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" } });
      const text = (await r.text()).slice(0, 300);
      if (r.status === 401 || r.status === 403) sessionStorage.removeItem(TOKEN_KEY);
      toast(`${endpoint}: ${r.status} ${text}`, !r.ok);
    } catch (e) { toast(`${endpoint}: ${e}`, true); }
  }

  function wireControls() {
    for (const b of document.querySelectorAll("#controls button[data-endpoint]")) {
      b.addEventListener("click", () => control(b.dataset.endpoint, {}, b.dataset.confirm));
    }
    $("#btn-rollback").addEventListener("click", () => {
      const step = parseInt($("#rollback-target").value, 10);
      if (Number.isNaN(step)) { toast("No checkpoint to roll back to yet", true); return; }
      control("/api/rollback", { to_step: step }, `Roll back to the checkpoint at step ${step}?`);
    });
    $("#btn-token").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); askToken(); });
  }

  // ------------------------------------------------------------------ charts

  function chartData(m) {
    // uPlot wants one x array shared by all series: the union of the series' steps.
    const xs = new Set();
    for (const s of m.series) for (const x of s.steps) xs.add(x);
    const x = Float64Array.from(xs).sort();
    const index = new Map(); x.forEach((v, i) => index.set(v, i));
    const ys = m.series.map((s) => {
      const y = new Array(x.length).fill(null);
      s.steps.forEach((step, i) => { y[index.get(step)] = s.values[i]; });
      return y;
    });
    return [Array.from(x), ...ys];
  }

  function seriesOpts(m) {
    return [{}, ...m.series.map((s) => ({
      label: `segment ${s.segment}${s.rolled_back ? " (rolled back)" : ""}`,
      stroke: s.rolled_back ? COLORS.rolled : COLORS.live, width: s.rolled_back ? 1 : 1.5,
      dash: s.rolled_back ? [5, 3] : undefined, spanGaps: true, points: { show: false },
    }))];
  }

  function markersFor(name) {
    const snap = st.snap, out = [];
    for (const a of snap.alerts) {
      // Its own metric's alerts, and on the four main charts every critical one (the incident).
      if (a.metric === name || (a.severity === "critical" && MAIN.includes(name))) {
        out.push({ kind: "alert", severity: a.severity, step: a.step, onset: a.onset_step, label: a.code });
      }
    }
    for (const d of snap.decisions) {
      if (d.action === "rollback") out.push({ kind: "rollback", step: d.step, target: d.target_step, label: `↶ ${d.target_step}` });
      if (d.action === "halt") out.push({ kind: "halt", step: d.step, label: "halt" });
    }
    for (const c of snap.checkpoints) out.push({ kind: "checkpoint", step: c.step, health: c.health });
    for (const c of snap.constraint_changes || []) {
      if (c.name === name) out.push({ kind: "constraint", step: c.step, label: `${c.action} → ${fmt(c.value)}` });
    }
    const m = snap.metrics[name];
    if (m) for (const p of m.nonfinite) out.push({ kind: "nonfinite", step: p.step, label: String(p.value) });
    return out;
  }

  function drawMarkers(u, name) {
    const ctx = u.ctx, { left, top, width, height } = u.bbox, drawn = [];
    const px = (step) => u.valToPos(step, "x", true);
    const inView = (x) => x >= left - 1 && x <= left + width + 1;
    const dpr = devicePixelRatio || 1;
    ctx.save();
    ctx.beginPath(); ctx.rect(left, top, width, height); ctx.clip();
    ctx.font = `${10 * dpr}px sans-serif`;
    for (const mk of markersFor(name)) {
      const x = px(mk.step);
      if (!inView(x)) continue;
      drawn.push(mk);
      if (mk.kind === "alert") {
        const color = COLORS[mk.severity] || COLORS.warning;
        const xo = px(mk.onset ?? mk.step);
        ctx.fillStyle = color + "22"; ctx.fillRect(Math.min(xo, x), top, Math.max(Math.abs(x - xo), 2 * dpr), height);
        ctx.strokeStyle = color; ctx.lineWidth = 1.5 * dpr; ctx.setLineDash([4 * dpr, 3 * dpr]);
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
        ctx.setLineDash([]); ctx.fillStyle = color;
        ctx.beginPath(); ctx.moveTo(x - 5 * dpr, top); ctx.lineTo(x + 5 * dpr, top); ctx.lineTo(x, top + 8 * dpr); ctx.fill();
      } else if (mk.kind === "rollback" || mk.kind === "halt") {
        const color = mk.kind === "halt" ? COLORS.halt : COLORS.rollback;
        ctx.strokeStyle = color; ctx.fillStyle = color; ctx.lineWidth = 2 * dpr;
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
        if (mk.kind === "rollback" && mk.target !== null && mk.target !== undefined) {
          const xt = px(mk.target), y = top + 14 * dpr;
          ctx.beginPath(); ctx.moveTo(x, y); ctx.lineTo(xt, y); ctx.stroke();
          ctx.beginPath(); ctx.moveTo(xt, y); ctx.lineTo(xt + 6 * dpr, y - 4 * dpr); ctx.lineTo(xt + 6 * dpr, y + 4 * dpr); ctx.fill();
        }
        ctx.textAlign = "right"; ctx.fillText(mk.label, x - 4 * dpr, top + 28 * dpr); ctx.textAlign = "left";
      } else if (mk.kind === "checkpoint") {
        ctx.fillStyle = COLORS[mk.health] || "#9ca3af";
        ctx.fillRect(x - 2 * dpr, top + height - 7 * dpr, 4 * dpr, 7 * dpr);
      } else if (mk.kind === "constraint") {
        ctx.strokeStyle = "#0f766e"; ctx.fillStyle = "#0f766e"; ctx.lineWidth = 1 * dpr; ctx.setLineDash([2 * dpr, 2 * dpr]);
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke(); ctx.setLineDash([]);
        const right = x > left + 0.6 * width;  // keep the label inside the plot
        ctx.textAlign = right ? "right" : "left";
        ctx.fillText(mk.label, right ? x - 3 * dpr : x + 3 * dpr, top + height - 12 * dpr);
        ctx.textAlign = "left";
      } else if (mk.kind === "nonfinite") {
        ctx.fillStyle = COLORS.nan;
        ctx.beginPath(); ctx.arc(x, top + 5 * dpr, 4 * dpr, 0, 2 * Math.PI); ctx.fill();
      }
    }
    ctx.restore();
    st.markers[name] = drawn;
  }

  function chartSize(container) {
    const w = Math.max(240, container.clientWidth - 14);
    return { width: w, height: container.classList.contains("big") ? 220 : 160 };
  }

  function makeChart(name, holder, big) {
    const m = st.snap.metrics[name];
    const box = el("div", { class: "chart" + (big ? " big" : ""), "data-metric": name });
    const last = el("span", { class: "last" });
    box.append(el("div", { class: "head" }, el("span", { class: "name" }, name), last));
    holder.append(box);
    const opts = {
      ...chartSize(box), series: seriesOpts(m), legend: { show: false },
      scales: { x: { time: false } }, cursor: { drag: { x: true, y: false } },
      axes: [{ size: 30, values: (u, splits) => splits.map(fmt) },
             { size: 62, values: (u, splits) => splits.map(fmt) }],
      hooks: { draw: [(u) => drawMarkers(u, name)] },
    };
    const u = new uPlot(opts, chartData(m), box);
    st.charts[name] = { u, box, last, segments: m.series.map((s) => `${s.segment}:${s.rolled_back}`).join(",") };
    updateLast(name);
  }

  function updateLast(name) {
    const c = st.charts[name], m = st.snap.metrics[name];
    const live = m.series.filter((s) => !s.rolled_back).pop();
    const v = live && live.values.length ? live.values[live.values.length - 1] : null;
    c.last.textContent = v === null ? "" : fmt(v);
    if (m.nonfinite_count) c.last.append(el("span", { class: "flag" }, `${m.nonfinite_count} non-finite`));
  }

  function renderCharts() {
    for (const c of Object.values(st.charts)) c.u.destroy();
    st.charts = {};
    for (const id of ["#charts-main", "#charts-other", "#charts-constraints"]) $(id).replaceChildren();
    const names = Object.keys(st.snap.metrics);
    for (const n of MAIN) if (names.includes(n)) makeChart(n, $("#charts-main"), true);
    for (const n of names.filter((n) => !MAIN.includes(n) && !CONSTRAINTS.includes(n)).sort()) makeChart(n, $("#charts-other"), false);
    for (const n of CONSTRAINTS) if (names.includes(n)) makeChart(n, $("#charts-constraints"), false);
  }

  function appendPoint(name, step, segment, value) {
    const m = st.snap.metrics[name];
    if (!m) return false;
    let s = m.series[m.series.length - 1];
    if (!s || s.segment !== segment || s.rolled_back) return false;
    const v = num(value);
    if (Number.isFinite(v)) { s.steps.push(step); s.values.push(v); }
    else { m.nonfinite.push({ step, value }); m.nonfinite_count += 1; }
    m.count += 1;
    const c = st.charts[name];
    if (c) c.dirty = true;
    // Too many raw points since the last downsample: ask the server for a fresh one.
    return s.steps.length <= 3 * st.maxPoints;
  }

  function flushCharts() {
    for (const [name, c] of Object.entries(st.charts)) {
      if (!c.dirty) continue;
      c.dirty = false;
      c.u.setData(chartData(st.snap.metrics[name]));
      updateLast(name);
    }
  }

  const redrawMarkers = () => { for (const c of Object.values(st.charts)) c.u.redraw(false); };

  // ------------------------------------------------------------------ side panels

  function renderHeader() {
    const r = st.snap.run;
    const s = $("#state");
    // The supervisor's status is authoritative when present (the history may not have seen a state yet).
    const state = (st.status && st.status.state) || r.state || (r.closed ? "closed" : "unknown");
    s.textContent = state; s.dataset.state = state;
    const run = st.status && st.status.run_dir ? st.status.run_dir.split("/").filter(Boolean).pop() : "";
    document.title = `rlguard${run ? ": " + run : ""} (${state}, step ${r.step ?? "-"})`;
    $("#step").textContent = r.step ?? "-";
    $("#segment").textContent = r.segment ?? "-";
    $("#events").textContent = r.events;
    $("#alert-count").textContent = st.snap.alert_count;
    st.controlAvailable = Boolean(st.snap.control || st.status);
    $("#controls").hidden = !st.controlAvailable;
    if (st.status && st.status.reason) s.title = st.status.reason;
  }

  function renderAge() {
    const t = st.snap && st.snap.run.last_event_time;
    $("#last-age").textContent = t ? `${Math.max(0, Math.round(Date.now() / 1000 - t))} s ago` : "-";
  }

  function timelineItems() {
    const s = st.snap, items = [];
    for (const a of s.alerts) items.push({ t: a.time, step: a.step, seg: a.segment, cls: a.severity,
      what: `${a.severity.toUpperCase()} ${a.code} on ${a.metric}` + (a.onset_step !== a.step ? ` (onset step ${a.onset_step})` : ""),
      why: a.message });
    for (const d of s.decisions) {
      let what = d.action.toUpperCase();
      if (d.action === "rollback") what += ` → step ${d.target_step}`;
      const params = Object.entries(d.params || {}).map(([k, v]) => `${k}=${fmt(v)}`).join(" ");
      if (params) what += ` (${params})`;
      if (d.mode !== "auto") what += ` [${d.mode}]`;
      const outcome = typeof d.outcome === "object" ? JSON.stringify(d.outcome) : d.outcome;
      items.push({ t: d.time, step: d.step, seg: d.segment, cls: `decision ${d.action}`, what,
        why: d.reason + (d.phase || outcome ? ` — ${[d.phase, outcome].filter(Boolean).join(": ")}` : "") });
    }
    for (const r of s.restarts) items.push({ t: r.time, step: r.step, cls: "restart", what: "RESTART", why: r.reason });
    for (const x of s.states) items.push({ t: x.time, step: x.step, cls: "state", what: `state: ${x.state}`, why: x.reason || "" });
    for (const n of s.notes || []) items.push({ t: n.time, step: n.step, cls: "state", what: n.kind, why: n.text });
    items.sort((a, b) => (b.t || 0) - (a.t || 0));
    return items.slice(0, 300);
  }

  function renderTimeline() {
    const ol = $("#timeline");
    ol.replaceChildren(...timelineItems().map((it) => el("li", { class: it.cls },
      el("div", { class: "when" }, `step ${it.step ?? "-"}` + (it.seg !== undefined ? ` · segment ${it.seg}` : "") + ` · ${clock(it.t)}`),
      el("div", { class: "what" }, it.what), it.why ? el("div", { class: "why" }, it.why) : "")));
  }

  function renderApprovals() {
    // The pending approval comes from the supervisor's public GET /api/status (it owns the id).
    const a = st.status && st.status.approval;
    $("#approvals-box").hidden = !a;
    if (!a) { $("#approvals").replaceChildren(); return; }
    const d = a.decision || {};
    $("#approvals").replaceChildren(el("li", {},
      el("div", {}, el("b", {}, String(d.action || "?").toUpperCase()), ` at step ${d.step}: ${d.reason || ""}`),
      el("div", { class: "when" }, `${a.decision_id} · ${Math.round(a.seconds_left || 0)} s left`),
      el("button", { class: "approve", onclick: () => control("/api/approve", { decision_id: a.decision_id, approve: true }) }, "Approve"),
      el("button", { class: "deny", onclick: () => control("/api/approve", { decision_id: a.decision_id, approve: false }) }, "Deny")));
  }

  function renderCoverage() {
    // What the run's metrics do NOT let rlguard see. The supervisor's status is live; the
    // history's copy covers a dashboard without one.
    const c = (st.status && st.status.coverage) || (st.snap && st.snap.coverage);
    $("#coverage-box").hidden = !c;
    if (!c) return;
    const off = c.classes.filter((k) => !k.armed);
    $("#coverage-box").dataset.off = String(off.length);
    $("#coverage-armed").textContent = `(${c.classes.length - off.length} of ${c.classes.length} failure classes armed)`;
    $("#coverage").replaceChildren(...(off.length ? off.map((k) => el("li", { title: k.what, "data-class": k.class },
      el("b", {}, k.class.replace(/_/g, " ")), ` (${k.missing.join(", ")} not logged)`))
      : [el("li", { class: "all" }, "nothing: every failure class is armed")]));
  }

  async function pollStatus() {
    // Public, read-only: tells whether a control API is here (buttons) and what waits for approval.
    try {
      const r = await fetch("/api/status", { cache: "no-store" });
      st.status = r.ok ? await r.json() : null;
    } catch (e) { st.status = null; }
    if (st.snap) { renderHeader(); renderApprovals(); renderCoverage(); }
  }

  function renderCheckpoints() {
    const rows = [...st.snap.checkpoints].sort((a, b) => b.step - a.step);
    $("#checkpoints tbody").replaceChildren(...rows.map((c) => el("tr", {},
      el("td", {}, c.step), el("td", {}, el("span", { class: `health ${c.health}` }, c.health || "?")),
      el("td", {}, c.segment ?? ""),
      el("td", {}, st.controlAvailable && !["pruned", "corrupt"].includes(c.health) ? el("button", { title: c.path,
        onclick: () => control("/api/rollback", { to_step: c.step }, `Roll back to the checkpoint at step ${c.step} (${c.health})?`) },
      "roll back here") : ""))));
    // Pruned and corrupt checkpoints cannot be loaded: not offered as rollback targets.
    const usable = rows.filter((c) => !["pruned", "corrupt"].includes(c.health));
    const sel = $("#rollback-target"), keep = sel.value;
    sel.replaceChildren(...usable.map((c) => el("option", { value: c.step }, `step ${c.step} (${c.health || "?"})`)));
    const healthy = usable.find((c) => c.health === "healthy");
    if (keep && usable.some((c) => String(c.step) === keep)) sel.value = keep; else if (healthy) sel.value = healthy.step;
  }

  function renderSegments() {
    $("#segments tbody").replaceChildren(...st.snap.segments.slice().reverse().map((s) => el("tr", {},
      el("td", {}, s.index),
      el("td", {}, `${s.start_step}–${s.last_step}` + (s.rolled_back_from !== null ? ` (≥${s.rolled_back_from} undone)` : "")),
      el("td", {}, s.reason || (s.index === 0 ? "start" : "")))));
  }

  function renderPanels() {
    renderHeader(); renderCoverage(); renderTimeline(); renderApprovals(); renderCheckpoints(); renderSegments();
  }

  // ------------------------------------------------------------------ data flow

  async function load() {
    const width = Math.max(400, Math.round(window.innerWidth / 2));
    st.maxPoints = Math.min(2000, width);
    const r = await fetch(`/api/history?max_points=${st.maxPoints}`, { cache: "no-store" });
    if (!r.ok) throw new Error(`/api/history: ${r.status}`);
    st.snap = await r.json();
    st.seq = st.snap.seq; st.loads += 1;
    renderCharts(); renderPanels(); renderAge();
  }

  function scheduleReload() {
    if (st.reloadTimer) return;
    st.reloadTimer = setTimeout(async () => {
      st.reloadTimer = null;
      try { await load(); connect(); } catch (e) { toast(String(e), true); }
    }, 300);
  }

  function applyBatch(batch) {
    const s = st.snap;
    let panels = false, markers = false;
    for (const [seq, kind, data] of batch) {
      st.seq = seq;
      if (kind === "event") {
        s.run.step = data.step; s.run.events += 1; s.run.last_event_time = Date.now() / 1000;
        for (const [name, value] of Object.entries(data.metrics)) {
          if (!appendPoint(name, data.step, data.segment, value)) { scheduleReload(); }
        }
        panels = true;
      } else if (kind === "alert") {
        s.alerts.push(data); s.alert_count += 1; panels = markers = true;
      } else if (kind === "decision") {
        const i = s.decisions.findIndex((d) => d.id === data.id);
        if (i >= 0) s.decisions[i] = data; else s.decisions.push(data);
        if (i < 0 && ["tighten", "relax", "rollback"].includes(data.action)) {
          for (const [name, value] of Object.entries(data.params || {})) {
            if (typeof value === "number") (s.constraint_changes = s.constraint_changes || []).push(
              { step: data.step, name, value, action: data.action, mode: data.mode });
          }
        }
        panels = markers = true;
      } else if (kind === "checkpoint") {
        const i = s.checkpoints.findIndex((c) => c.step === data.step);
        if (i >= 0) s.checkpoints[i] = data; else s.checkpoints.push(data);
        panels = markers = true;
      } else if (kind === "state") {
        s.states.push(data); s.run.state = data.state; panels = true;
      } else if (kind === "note") {
        (s.notes = s.notes || []).push(data); panels = true;
      } else if (kind === "restart") {
        s.restarts.push(data); panels = true;
      } else if (kind === "segment") {
        scheduleReload();
      } else if (kind === "closed") {
        s.run.closed = true; panels = true;
        if (st.es) { st.es.close(); st.es = null; setLive(false, "run closed"); }
      }
    }
    if (panels) renderPanels();
    if (markers) redrawMarkers();
  }

  function setLive(live, text) {
    st.live = live;
    const c = $("#conn"); c.dataset.live = live ? "1" : "0"; c.textContent = text;
  }

  function connect() {
    if (st.es) st.es.close();
    st.es = null;
    if (st.snap && st.snap.run.closed) { setLive(false, "run closed"); return; }
    const es = new EventSource(`/api/stream?since=${st.seq}`);
    st.es = es;
    es.addEventListener("open", () => setLive(true, "live"));
    es.addEventListener("error", () => setLive(false, "reconnecting…"));
    es.addEventListener("batch", (e) => applyBatch(JSON.parse(e.data)));
    es.addEventListener("resync", () => scheduleReload());
  }

  window.addEventListener("resize", () => {
    for (const c of Object.values(st.charts)) c.u.setSize(chartSize(c.box));
  });

  takeTokenFromFragment();
  wireControls();
  setInterval(flushCharts, 250);
  setInterval(renderAge, 1000);
  setInterval(pollStatus, 2000);
  pollStatus();
  load().then(connect).catch((e) => { setLive(false, "offline"); toast(String(e), true); });
})();
