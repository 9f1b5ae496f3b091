// The jobqueue dashboard: vanilla JS, no build step, nothing fetched from elsewhere.
// Job data is only ever put on the page with textContent and DOM calls (never innerHTML).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const state = { me: null, filters: {}, cursor: null, cursors: [], job: null, source: null, lastSeq: 0, timer: null };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function toast(text) {
    const t = $("toast");
    t.textContent = text;
    t.classList.add("show");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => t.classList.remove("show"), 3000);
  }
  function when(t) { return t ? new Date(t * 1000).toLocaleString() : "—"; }
  function seconds(s) {
    if (s === null || s === undefined) return "—";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  // Attempts as people count them ("2 of 3"): the stored attempt counts earlier ones, from 0.
  function attempts(j) {
    if (!j.started_at && j.status !== "pending" && j.attempt === 0) return "not run";
    const n = j.attempt + 1, m = j.max_retries + 1;
    return n > m ? String(n) : n + " of " + m;
  }
  function shortId(id) { return /^[0-9a-f]{32}$/.test(id) ? id.slice(-8) : id; }

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    if (opts.method === "POST") {
      opts.headers["X-CSRF-Token"] = state.me ? state.me.csrf : "";
      opts.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, opts);
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const message = body && body.error ? body.error : response.status + " " + response.statusText;
      const err = new Error(message);
      err.status = response.status;
      throw err;
    }
    return body;
  }

  // -- overview ---------------------------------------------------------------------------
  async function loadOverview() {
    const o = await api("api/overview");
    const cards = $("cards");
    clear(cards);
    const statuses = state.me.statuses;
    let total = 0;
    for (const s of statuses) total += o.by_status[s] || 0;
    const add = (label, value, status) => {
      const card = el("div", { class: "card" + (status ? " s-" + status : ""), "data-status": status || "" });
      card.appendChild(el("b", {}, value));
      card.appendChild(el("span", {}, label));
      if (status !== undefined) card.addEventListener("click", () => { setFilter({ status: status }); });
      cards.appendChild(card);
    };
    add("jobs", total.toLocaleString(), "");
    for (const s of statuses) add(s, (o.by_status[s] || 0).toLocaleString(), s);
    add("oldest due pending", seconds(o.oldest_due_age));
    const tbody = $("handlers").tBodies[0];
    clear(tbody);
    for (const [handler, counts] of Object.entries(o.by_handler)) {
      const tr = el("tr");
      let sum = 0;
      for (const v of Object.values(counts)) sum += v;
      tr.appendChild(el("td", {}, handler || "(coroutine)"));
      for (const s of ["pending", "running", "failed"]) tr.appendChild(el("td", {}, counts[s] || 0));
      tr.appendChild(el("td", {}, sum));
      tr.addEventListener("click", () => setFilter({ handler: handler }));
      tbody.appendChild(tr);
    }
    drawCharts(o.finished, o.now);
  }

  function drawCharts(finished, now) {
    const minutes = 30, counts = new Array(minutes).fill(0), lat = [];
    for (let i = 0; i < minutes; i++) lat.push([]);
    for (const [at, latency] of finished) {
      const m = Math.floor((now - at) / 60);
      if (m >= 0 && m < minutes) { counts[minutes - 1 - m] += 1; lat[minutes - 1 - m].push(latency); }
    }
    const p50 = lat.map((xs) => { if (!xs.length) return null; xs.sort((a, b) => a - b); return xs[Math.floor(xs.length / 2)]; });
    bars($("chart-throughput"), counts);
    line($("chart-latency"), p50);
  }
  function bars(svg, values) {
    clear(svg);
    const max = Math.max(1, ...values), w = 300 / values.length;
    svg.appendChild(svgEl("line", { class: "axis", x1: 0, y1: 70, x2: 300, y2: 70 }));
    values.forEach((v, i) => {
      const h = (v / max) * 60;
      const r = svgEl("rect", { class: "bar", x: i * w + 1, y: 70 - h, width: Math.max(w - 2, 1), height: h });
      const title = svgEl("title");
      title.textContent = v + " finished, " + (values.length - i) + " min ago";
      r.appendChild(title);
      svg.appendChild(r);
    });
    const label = svgEl("text", { x: 2, y: 78 });
    label.textContent = "max " + max + "/min";
    svg.appendChild(label);
  }
  function line(svg, values) {
    clear(svg);
    const present = values.filter((v) => v !== null);
    const max = Math.max(0.001, ...present), w = 300 / values.length;
    svg.appendChild(svgEl("line", { class: "axis", x1: 0, y1: 70, x2: 300, y2: 70 }));
    const points = [];
    values.forEach((v, i) => { if (v !== null) points.push((i * w + w / 2).toFixed(1) + "," + (70 - (v / max) * 60).toFixed(1)); });
    if (points.length > 1) svg.appendChild(svgEl("polyline", { class: "line", points: points.join(" ") }));
    for (const p of points) {
      const [x, y] = p.split(",");
      svg.appendChild(svgEl("circle", { class: "dot", cx: x, cy: y, r: 2.5 }));
    }
    const label = svgEl("text", { x: 2, y: 78 });
    label.textContent = present.length ? "max " + seconds(max) : "no finished jobs";
    svg.appendChild(label);
  }

  // -- list -------------------------------------------------------------------------------
  function query(extra) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(state.filters)) if (v) p.set(k, v);
    for (const [k, v] of Object.entries(extra || {})) if (v) p.set(k, v);
    return p.toString();
  }
  function setFilter(f) {
    state.filters = Object.assign({}, f);
    const form = $("filters");
    for (const name of ["status", "handler", "session", "id"]) form.elements[name].value = state.filters[name] || "";
    state.cursor = null; state.cursors = [];
    if (location.hash && location.hash !== "#/") location.hash = "#/";
    loadList();
  }
  async function loadList() {
    const page = await api("api/jobs?" + query({ cursor: state.cursor }));
    const typed = state.filters.id;
    if (typed && !page.rows.length && !state.cursor && typed.length >= 4) {
      // Not the start of an id: maybe the end of one (the short ids the list shows).
      try {
        const found = await api("api/jobs/" + encodeURIComponent(typed));
        location.hash = "#/job/" + encodeURIComponent(found.job.id);
        return;
      } catch (e) { /* nothing ends with it either: the empty list says so */ }
    }
    const tbody = $("jobs").tBodies[0];
    const key = JSON.stringify(page);
    if (tbody.dataset.key === key && tbody.dataset.age && Date.now() - tbody.dataset.age < 5000) return;
    tbody.dataset.key = key;  // unchanged rows are left alone (a click on one is not lost)
    tbody.dataset.age = Date.now();
    clear(tbody);
    const now = Date.now() / 1000;
    for (const r of page.rows) {
      const tr = el("tr", { "data-id": r.id, "data-status": r.status });
      const idCell = el("td", { class: "mono", title: r.id }, shortId(r.id));
      tr.appendChild(idCell);
      tr.appendChild(el("td", {}, r.handler || "(coroutine)"));
      const st = el("td");
      st.appendChild(el("span", { class: "status s-" + r.status }, r.status + (r.control ? " (" + r.control + "…)" : "")));
      tr.appendChild(st);
      tr.appendChild(el("td", {}, attempts(r)));
      tr.appendChild(el("td", {}, r.session_id || ""));
      tr.appendChild(el("td", { title: when(r.created_at) }, seconds(now - r.created_at) + " ago"));
      const ran = r.started_at ? (r.completed_at || now) - r.started_at : null;
      tr.appendChild(el("td", {}, seconds(ran)));
      // An error in red; a reason alone (a sleeping workflow, a retry's wait) is not one.
      tr.appendChild(el("td", { class: r.error ? "error" : "note muted" }, r.error || r.reason || ""));
      tr.addEventListener("click", () => { location.hash = "#/job/" + encodeURIComponent(r.id); });
      tbody.appendChild(tr);
    }
    state.next = page.next;
    $("older").hidden = !page.next;
    $("newer").hidden = !state.cursor;
  }

  function bulk(action) {
    const f = state.filters;
    if (!f.status && !f.handler && !f.session) { toast("Choose a status, handler or session first"); return; }
    const parts = [];
    for (const k of ["status", "handler", "session"]) if (f[k]) parts.push(k + " = " + f[k]);
    $("confirm-text").textContent = action[0].toUpperCase() + action.slice(1) + " every job with " + parts.join(", ") + "?";
    $("confirm").hidden = false;
    $("confirm").dataset.action = action;
  }
  async function confirmBulk() {
    const action = $("confirm").dataset.action;
    $("confirm").hidden = true;
    const body = { status: state.filters.status || null, handler: state.filters.handler || null, session: state.filters.session || null };
    try {
      const out = await api("api/bulk/" + action, { method: "POST", body: JSON.stringify(body) });
      toast(action + ": " + out.count + " job(s)");
    } catch (e) { toast(e.message); }
    refresh();
  }

  // -- detail -----------------------------------------------------------------------------
  async function loadJob(id) {
    let d;
    try { d = await api("api/jobs/" + encodeURIComponent(id)); }
    catch (e) { $("d-id").textContent = id; $("d-status").textContent = e.message; return; }
    const j = d.job;
    state.job = j;
    $("d-id").textContent = j.id;
    const st = $("d-status");
    st.textContent = j.status + (j.control ? " (" + j.control + " requested)" : "");
    st.className = "status s-" + j.status;
    st.dataset.status = j.status;
    const rec = $("d-record");
    clear(rec);
    const fields = [["handler", j.handler || "(coroutine)"], ["attempt", attempts(j)],
      ["session", j.session_id], ["priority", j.priority], ["created", when(j.created_at)], ["started", when(j.started_at)],
      ["finished", when(j.completed_at)], ["ran for", seconds(j.started_at ? (j.completed_at || Date.now() / 1000) - j.started_at : null)],
      ["run at", when(j.run_at)], ["timeout", j.timeout === null ? "none" : seconds(j.timeout)], ["owner", j.owner],
      ["reason", j.reason], ["description", j.description], ["concurrency key", j.concurrency_key]];
    for (const [k, v] of fields) { rec.appendChild(el("dt", {}, k)); rec.appendChild(el("dd", {}, v === null || v === undefined ? "—" : v)); }
    showText($("d-payload"), d.payload);
    showText($("d-result"), d.result);
    $("d-failure").hidden = !j.error && !d.traceback.text;
    $("d-error").textContent = j.error ? (j.error_type ? j.error_type + ": " : "") + j.error : "";
    showText($("d-traceback"), d.traceback);
    drawSteps(d.steps);
    $("d-runs-box").hidden = !d.runs.length;
    const runs = $("d-runs").tBodies[0];
    clear(runs);
    for (const r of d.runs) {
      const tr = el("tr");
      for (const v of [r.attempt + 1, r.status, r.reason || "", (r.error_type ? r.error_type + ": " : "") + (r.error || ""),
        when(r.started_at), when(r.completed_at), when(r.retried_at)]) tr.appendChild(el("td", {}, v));
      runs.appendChild(tr);
    }
    const actions = $("d-actions");
    const allowed = j.id + ":" + d.actions.join(",");
    if (actions.dataset.key !== allowed) {  // the same buttons stay (a click on one is not lost)
      actions.dataset.key = allowed;
      clear(actions);
    } else {
      d.actions = [];
    }
    for (const a of d.actions) {
      const b = el("button", { type: "button", "data-action": a, class: a === "cancel" ? "danger" : "" }, a[0].toUpperCase() + a.slice(1));
      b.addEventListener("click", () => control(j.id, a));
      actions.appendChild(b);
    }
    if (!state.source && d.events.available && state.followed !== j.id) follow(j.id, Math.max(0, d.events.last_seq - 200));
    if (!d.events.available) $("d-events-state").textContent = j.handler ? "(live events need persist_events=True)" : "(not logged for coroutine jobs)";
  }
  function showText(pre, shown) {
    pre.textContent = shown.text === null ? "—" : shown.text + (shown.cut ? "\n… (cut)" : "");
  }
  function drawSteps(steps) {
    $("d-steps-box").hidden = !steps.length;
    const svg = $("d-steps");
    clear(svg);
    if (!steps.length) return;
    const now = Date.now() / 1000;
    const starts = steps.map((s) => s.started_at || now), ends = steps.map((s) => Math.max(s.completed_at || s.wake_at || now, s.started_at || now));
    const t0 = Math.min(...starts), t1 = Math.max(...ends, t0 + 0.001), rowH = 18, width = 600, left = 160;
    svg.setAttribute("viewBox", "0 0 " + (width + left + 140) + " " + (steps.length * rowH + 4));
    steps.forEach((s, i) => {
      const y = i * rowH + 2;
      const name = svgEl("text", { x: 0, y: y + 12 });
      name.textContent = s.name + " (" + s.kind + ")";
      svg.appendChild(name);
      const x = left + ((s.started_at || now) - t0) / (t1 - t0) * width;
      const end = s.kind === "sleep" && s.status === "sleeping" ? s.wake_at : (s.completed_at || now);
      const w = Math.max(((end || now) - (s.started_at || now)) / (t1 - t0) * width, 2);
      const bar = svgEl("rect", { x: x, y: y + 2, width: w, height: rowH - 6, class: "bar s-" + s.status, fill: "currentColor" });
      svg.appendChild(bar);
      const note = svgEl("text", { x: Math.min(x + w + 4, width + left + 4), y: y + 12 });
      note.textContent = s.status + (s.duration !== null ? " " + seconds(s.duration) : "") + (s.wake_at && s.status === "sleeping" ? " wakes " + new Date(s.wake_at * 1000).toLocaleTimeString() : "");
      svg.appendChild(note);
    });
  }
  async function control(id, action) {
    try {
      const out = await api("api/jobs/" + encodeURIComponent(id) + "/" + action, { method: "POST", body: "{}" });
      toast(action + ": " + out.status);
    } catch (e) { toast(e.message); }
    if (action === "retry") { closeSource(); state.followed = null; }
    await loadJob(id);
  }
  function closeSource() { if (state.source) { state.source.close(); state.source = null; } }
  function follow(id, after) {
    closeSource();
    const list = $("d-events");
    clear(list);
    state.followed = id;
    const source = new EventSource("api/jobs/" + encodeURIComponent(id) + "/events?after=" + after);
    state.source = source;
    $("d-events-state").textContent = "(connecting)";
    source.onopen = () => { $("d-events-state").textContent = "(live)"; };
    source.onerror = () => { if (state.source === source) $("d-events-state").textContent = source.readyState === 2 ? "(disconnected: reload the page)" : "(reconnecting…)"; };
    source.onmessage = (m) => {
      const e = JSON.parse(m.data);
      const li = el("li", { "data-seq": e.seq, "data-type": e.type });
      li.appendChild(el("span", { class: "t" }, "#" + e.seq + " " + e.type));
      li.appendChild(document.createTextNode(typeof e.data === "string" ? e.data : JSON.stringify(e.data)));
      list.appendChild(li);
      while (list.childNodes.length > 1000) list.removeChild(list.firstChild);
      list.scrollTop = list.scrollHeight;
      if (e.type === "end" || e.type === "error") loadJob(id);
    };
    source.addEventListener("done", () => { source.close(); if (state.source === source) { state.source = null; $("d-events-state").textContent = "(ended)"; } });
    source.addEventListener("failed", (m) => { source.close(); $("d-events-state").textContent = "(" + JSON.parse(m.data).error + ")"; });
  }

  // -- routing and refresh ----------------------------------------------------------------
  function route() {
    const m = /^#\/job\/(.+)$/.exec(location.hash);
    $("detail-view").hidden = !m;
    $("list-view").hidden = !!m;
    $("overview").hidden = !!m;
    if (m) {
      const id = decodeURIComponent(m[1]);
      if (state.followed !== id) { closeSource(); state.followed = null; clear($("d-events")); }
      loadJob(id);
    } else {
      closeSource(); state.followed = null; state.job = null;
      loadOverview().catch((e) => toast(e.message));
      loadList().catch((e) => toast(e.message));
    }
  }
  function refresh() {
    if (document.hidden) return;
    if (!$("detail-view").hidden && state.job) { loadJob(state.job.id).catch(() => {}); return; }
    if (!$("list-view").hidden) {
      loadOverview().catch(() => {});
      if (!state.cursor) loadList().catch(() => {});
    }
  }

  async function start() {
    try { state.me = await api("api/me"); }
    catch (e) { document.body.textContent = e.message; return; }
    $("mode").textContent = state.me.access;
    $("who").textContent = state.me.who;
    $("path").textContent = state.me.path;
    if (state.me.access !== "full") document.body.classList.add("read-only");
    const select = $("filters").elements.status;
    for (const s of state.me.statuses) select.appendChild(el("option", { value: s }, s));
    $("filters").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const f = {};
      for (const name of ["status", "handler", "session", "id"]) f[name] = $("filters").elements[name].value.trim();
      setFilter(f);
    });
    $("clear").addEventListener("click", () => setFilter({}));
    $("older").addEventListener("click", () => { state.cursors.push(state.cursor); state.cursor = state.next; loadList(); });
    $("newer").addEventListener("click", () => { state.cursor = null; state.cursors = []; loadList(); });
    $("bulk-cancel").addEventListener("click", () => bulk("cancel"));
    $("bulk-retry").addEventListener("click", () => bulk("retry"));
    $("confirm-yes").addEventListener("click", confirmBulk);
    $("confirm-no").addEventListener("click", () => { $("confirm").hidden = true; });
    window.addEventListener("hashchange", route);
    route();
    // The server says when the file changed; the slow timer keeps run times current.
    const changes = new EventSource("api/changes");
    changes.onmessage = () => refresh();
    state.timer = setInterval(refresh, 5000);
  }
  start();
})();
