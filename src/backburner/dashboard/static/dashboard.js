"use strict";
// The dashboard: one JSON call per refresh, rendered into the static page; actions use the public API.
(() => {
  const REFRESH_MS = 3000;
  const STALE_AFTER_MS = 3 * REFRESH_MS;
  const KEY_STORAGE = "backburner.apiKey";
  const LAG_POINTS = 120;
  const state = { batchesPage: 0, filesPage: 0, lastOk: 0, lagSamples: [], data: null, selectedBatch: null };

  const $ = (sel, root = document) => root.querySelector(sel);
  const field = (name) => $(`[data-field="${name}"]`);
  const list = (name) => $(`[data-list="${name}"]`);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
    return node;
  }

  function headers() {
    const key = sessionStorage.getItem(KEY_STORAGE);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function api(path, options = {}) {
    const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
    if (response.status === 401 || response.status === 403) {
      askForKey(response.status === 403 ? "This key is not an admin key." : null);
      throw new Error("unauthorised");
    }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
      throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    }
    return response.json();
  }

  function askForKey(message) {
    $("#panels").hidden = true;
    $("#key-form").hidden = false;
    const error = $("#key-error");
    error.hidden = !message;
    error.textContent = message || "";
  }

  const ago = (iso) => {
    if (!iso) return "–";
    const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (s < 0) return `in ${fmtDuration(-s)}`;
    return `${fmtDuration(s)} ago`;
  };
  const fmtDuration = (s) => s < 90 ? `${s}s` : s < 5400 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
  const secs = (x) => x == null ? "–" : x < 1 ? `${Math.round(x * 1000)} ms` : `${x.toFixed(2)} s`;

  function replaceRows(tbody, rows, emptyText, columns) {
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: columns, class: "muted" }, emptyText))]));
  }

  function sparkline(points, { width = 80, height = 18, color = "#2563eb", bars = false } = {}) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("class", "spark");
    const max = Math.max(1e-9, ...points.map((p) => p.value));
    points.forEach((p, i) => {
      const w = width / Math.max(points.length, 1);
      const h = Math.max(1, (p.value / max) * (height - 1));
      const rect = document.createElementNS(svg.namespaceURI, "rect");
      rect.setAttribute("x", i * w); rect.setAttribute("y", height - h);
      rect.setAttribute("width", Math.max(1, w - 1)); rect.setAttribute("height", h);
      rect.setAttribute("fill", p.color || color);
      svg.append(rect);
    });
    return svg;
  }

  const OUTCOME_COLOURS = { succeeded: "#15803d", failed: "#b91c1c", abandoned: "#b91c1c", cancelled: "#b45309" };

  function renderCluster(c) {
    field("leader").textContent = c.leader ? c.leader.instance_id || "none" : "none";
    field("epoch").textContent = c.leader && c.leader.epoch != null ? c.leader.epoch : "–";
    field("since").textContent = c.leader && c.leader.since ? ago(c.leader.since) : "–";
    field("election").textContent = c.election ? `${c.election.backend}, ${c.election.mode}, lease ${c.election.lease_seconds}s` : "–";
    replaceRows(list("instances"), (c.instances || []).map((i) => el("tr", { "data-instance": i.instance_id },
      el("td", {}, i.instance_id), el("td", { class: i.role === "leader" ? "ok" : "" }, i.role),
      el("td", {}, i.process || "–"), el("td", {}, ago(i.last_seen)))), "No instances.", 4);
  }

  function renderJobs(jobs) {
    replaceRows(list("jobs"), jobs.map((job) => {
      const last = job.last_run || {};
      const history = (job.history || []).map((r) => ({ value: r.duration_s || 0.001, color: OUTCOME_COLOURS[r.outcome] }));
      const action = job.paused
        ? el("button", { type: "button", "data-action": "resume-job", onclick: () => jobAction(job, "resume") }, "Resume")
        : el("button", { type: "button", "data-action": "pause-job", onclick: () => jobAction(job, "pause") }, "Pause");
      return el("tr", { "data-job": job.id },
        el("td", {}, job.name || job.id, job.paused ? el("span", { class: "muted" }, " (paused)") : ""),
        el("td", {}, job.paused ? "paused" : ago(job.next_run_time)),
        el("td", { class: `outcome-${last.outcome || ""}`, title: last.error || "" },
          last.outcome ? `${last.outcome}${last.error ? ": " + last.error : ""}` : "never"),
        el("td", {}, secs(last.duration)),
        el("td", {}, sparkline(history)),
        el("td", {}, action));
    }), "No jobs registered.", 6);
  }

  function countChips(container, counts, attr) {
    const chips = Object.entries(counts).map(([label, n]) =>
      el("span", { class: "count", [attr]: label }, el("b", {}, n), label));
    container.replaceChildren(...(chips.length ? chips : [el("span", { class: "muted" }, "none")]));
  }

  function pager(name, page, total, pageSize, onPage) {
    const nav = $(`[data-pager="${name}"]`);
    const pages = Math.max(1, Math.ceil(total / pageSize));
    nav.replaceChildren(
      el("button", { type: "button", onclick: () => onPage(page - 1), ...(page <= 0 ? { disabled: "" } : {}) }, "‹"),
      el("span", { class: "muted" }, `page ${page + 1} of ${pages} (${total})`),
      el("button", { type: "button", onclick: () => onPage(page + 1), ...(page + 1 >= pages ? { disabled: "" } : {}) }, "›"));
  }

  function renderBatches(b) {
    const flat = {};
    for (const [provider, byStatus] of Object.entries(b.counts || {}))
      for (const [status, n] of Object.entries(byStatus)) flat[`${provider} ${status}`] = n;
    countChips(list("batch-counts"), flat, "data-count");
    const cycle = b.last_cycle;
    field("last-cycle").textContent = cycle
      ? `Last poll cycle ${ago(cycle.started_at)}: ${cycle.polled} polled, ${cycle.completed} completed, ` +
        `${cycle.items_ingested} items, ${cycle.errors} errors in ${secs(cycle.duration_s)}.`
      : "No poll cycle yet.";
    // Every unfinished batch, those still being submitted too (they cannot be cancelled yet).
    replaceRows(list("running-batches"), (b.running || []).map((batch) => {
      const submitting = batch.status === "submitting";
      return el("tr", { "data-batch": batch.id },
        el("td", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); showBatch(batch.id); } }, batch.id)),
        el("td", {}, batch.provider), el("td", { class: submitting ? "pending" : "" }, batch.status || "running"),
        el("td", {}, ago(batch.last_polled_at)), el("td", {}, submitting ? "after submission" : ago(batch.next_poll_at)),
        el("td", { title: batch.last_error || "" }, batch.consecutive_errors || 0),
        el("td", {}, submitting ? "" : el("button", { type: "button", class: "danger", "data-action": "cancel-batch",
          onclick: () => cancelBatch(batch) }, "Cancel")));
    }), "No unfinished batches.", 7);
    pager("batches", state.batchesPage, b.running_total || 0, b.page_size || 20, (p) => { state.batchesPage = p; refresh(); });
  }

  async function showBatch(id) {
    state.selectedBatch = id;
    const box = $("#batch-detail");
    box.hidden = false;
    box.textContent = "Loading…";
    try {
      const detail = await api(`/api/admin/batches/${encodeURIComponent(id)}/items?limit=20`);
      const summary = Object.entries(detail.summary || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
      box.replaceChildren(
        el("h3", {}, `Batch ${id}`),
        el("p", {}, `${detail.batch.provider} · ${detail.batch.status} · ${summary || "no items stored yet"}`),
        el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "custom id"), el("th", {}, "result"))),
          el("tbody", {}, ...(detail.items || []).map((item) =>
            el("tr", {}, el("td", {}, item.custom_id), el("td", {}, item.result_type || item.status || "–"))))));
    } catch (err) {
      box.textContent = `Could not load the batch: ${err.message}`;
    }
  }

  function renderFiles(f) {
    countChips(list("file-counts"), f.counts || {}, "data-count");
    replaceRows(list("files-in-progress"), (f.in_progress || []).map((file) => {
      const total = file.total_chunks || 0;
      const done = file.chunks_embedded || 0;
      return el("tr", { "data-file": file.id },
        el("td", { title: file.id }, file.name),
        el("td", {}, file.status),
        el("td", {}, el("progress", { max: total || 1, value: total ? done : 0 }), ` ${done}/${total || "?"}`));
    }), "Nothing in progress.", 3);
    pager("files", state.filesPage, f.in_progress_total || 0, f.page_size || 20, (p) => { state.filesPage = p; refresh(); });
    replaceRows(list("file-errors"), (f.recent_errors || []).map((file) => el("tr", { "data-file": file.id },
      el("td", { title: file.id }, file.name), el("td", { class: "error" }, file.error_message || "–"),
      el("td", {}, ago(file.updated_at)),
      el("td", {}, el("button", { type: "button", "data-action": "retry-file", onclick: () => retryFile(file) }, "Retry")))),
      "No errors.", 4);
  }

  // The function, then the file's last two path parts (the whole path on hover), wrapped in its cell.
  function culprit(c) {
    const parts = String(c.file || "").split("/");
    const short = parts.length > 2 ? `…/${parts.slice(-2).join("/")}` : c.file;
    return el("span", { title: `${c.file}:${c.line}` }, `${c.function} `, el("span", { class: "path" }, `${short}:${c.line}`));
  }

  function renderLoop(w) {
    field("loop-state").textContent = w.healthy === false ? "degraded (recent hang)" : (w.enabled === false ? "watchdog off" : "healthy");
    field("loop-lag").textContent = secs(w.lag_s);
    field("loop-threshold").textContent = secs(w.stall_threshold_s);
    state.lagSamples.push(w.lag_s || 0);
    if (state.lagSamples.length > LAG_POINTS) state.lagSamples.shift();
    const chart = $("#lag-chart");
    const max = Math.max(w.stall_threshold_s || 0.25, ...state.lagSamples);
    const pts = state.lagSamples.map((v, i) => `${(i / (LAG_POINTS - 1)) * 300},${60 - (v / max) * 58}`).join(" ");
    const threshold = 60 - ((w.stall_threshold_s || 0.25) / max) * 58;
    chart.innerHTML = `<line x1="0" x2="300" y1="${threshold}" y2="${threshold}" stroke="#b45309" stroke-dasharray="4 3"/>` +
      `<polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="${pts}"/>`;
    replaceRows(list("stalls"), (w.recent_stalls || []).map((s) => el("tr", {},
      el("td", {}, s.started_at ? ago(s.started_at) : "–"), el("td", {}, secs(s.duration_s)),
      el("td", {}, s.cause || "–"),
      el("td", {}, s.culprit ? culprit(s.culprit) : "–"))), "No stalls.", 4);
  }

  const RUN_OUTCOME_CLASS = { succeeded: "ok", failed: "error", skipped: "muted" };

  function renderSchedules(panel) {
    countChips(list("schedule-counts"), panel.counts || {}, "data-count");
    replaceRows(list("schedules-soonest"), (panel.soonest || []).map((s) => el("tr", { "data-schedule": s.id },
      el("td", { title: s.id }, s.name, s.paused ? el("span", { class: "muted" }, " (paused)") : ""),
      el("td", {}, s.kind === "cron" ? s.timing : s.kind === "interval" ? `every ${s.timing}` : "once"),
      el("td", {}, s.triggered ? "triggered" : ago(s.due_at)),
      el("td", {}, el("button", { type: "button", "data-action": "trigger-schedule",
        onclick: () => triggerSchedule(s) }, "Fire now")))), "No schedules due.", 4);
    replaceRows(list("schedule-runs"), (panel.recent_runs || []).map((r) => el("tr", { "data-schedule": r.schedule_id },
      el("td", { title: r.schedule_id }, r.schedule_name),
      el("td", {}, ago(r.fire_time)),
      el("td", { class: RUN_OUTCOME_CLASS[r.outcome] || "", title: r.error || "" },
        `${r.outcome}${r.http_status ? ` (${r.http_status})` : ""}`),
      el("td", {}, r.attempts), el("td", {}, r.epoch))), "No runs yet.", 5);
  }

  // Each panel's renderer, under the key of its data in /api/admin/dashboard. To add a panel, add
  // its <section class="panel"> to dashboard.html and its renderer here.
  const PANELS = {
    cluster: renderCluster,
    jobs: renderJobs,
    batches: renderBatches,
    files: renderFiles,
    loop: renderLoop,
    schedules: renderSchedules,
  };

  function render(data) {
    for (const [key, renderPanel] of Object.entries(PANELS)) {
      if (data[key] !== undefined) renderPanel(data[key]);
    }
  }

  function showFreshness() {
    const badge = $("#freshness");
    if (!state.lastOk) return;
    const age = Date.now() - state.lastOk;
    const stale = age > STALE_AFTER_MS;
    badge.dataset.state = stale ? "stale" : "fresh";
    badge.textContent = stale ? `stale: updated ${fmtDuration(Math.round(age / 1000))} ago` : "live";
  }

  async function refresh() {
    try {
      const query = `batches_page=${state.batchesPage}&files_page=${state.filesPage}`;
      const data = await api(`/api/admin/dashboard?${query}`);
      $("#panels").hidden = false;
      $("#key-form").hidden = true;
      $("#forget-key").hidden = !sessionStorage.getItem(KEY_STORAGE);
      state.data = data;
      state.lastOk = Date.now();
      render(data);
      // Time from navigation start to the first page with data, read by the load benchmark.
      if (window.dashboardFirstRenderMs === undefined) window.dashboardFirstRenderMs = performance.now();
    } catch (err) {
      if (err.message !== "unauthorised") {
        $("#freshness").dataset.state = "error";
        $("#freshness").textContent = `refresh failed: ${err.message}`;
        return;
      }
    }
    showFreshness();
  }

  function confirmThen(text, action) {
    const dialog = $("#confirm");
    field("confirm-text").textContent = text;
    dialog.returnValue = "";
    dialog.onclose = async () => {
      if (dialog.returnValue !== "ok") return;
      try {
        await action();
        toast("Done.");
      } catch (err) {
        toast(`Failed: ${err.message}`);
      }
      refresh();
    };
    dialog.showModal();
  }

  function toast(text) {
    const t = $("#toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  const post = (path) => api(path, { method: "POST" });
  const cancelBatch = (b) => confirmThen(`Cancel batch ${b.id} at ${b.provider}?`,
    () => post(`/v1/batches/${encodeURIComponent(b.id)}/cancel`));
  const retryFile = (f) => confirmThen(`Process ${f.name} again as a new file?`,
    () => post(`/v1/files/${encodeURIComponent(f.id)}/retry`));
  const triggerSchedule = (s) => confirmThen(`Fire schedule ${s.name} now?`,
    () => post(`/v1/schedules/${encodeURIComponent(s.id)}/trigger`));
  const jobAction = (job, verb) => confirmThen(`${verb === "pause" ? "Pause" : "Resume"} job ${job.name || job.id}?`,
    () => post(`/api/admin/scheduler/jobs/${encodeURIComponent(job.id)}/${verb}`));

  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("#key-input").value.trim());
    $("#key-input").value = "";
    refresh();
  });
  $("#forget-key").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORAGE); location.reload(); });

  refresh();
  setInterval(refresh, REFRESH_MS);
  setInterval(showFreshness, 1000);
})();
