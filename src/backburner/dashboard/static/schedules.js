"use strict";
// The schedules panel: renders the `schedules` part of each refresh; its actions use the public API.
(() => {
  const OUTCOME_CLASS = { succeeded: "ok", failed: "error", skipped: "muted" };

  function render(panel) {
    const ui = window.backburnerDashboard;
    const list = (name) => document.querySelector(`[data-list="${name}"]`);
    ui.countChips(list("schedule-counts"), panel.counts || {}, "data-count");
    ui.replaceRows(list("schedules-soonest"), (panel.soonest || []).map((s) => ui.el("tr", { "data-schedule": s.id },
      ui.el("td", { title: s.id }, s.name, s.paused ? ui.el("span", { class: "muted" }, " (paused)") : ""),
      ui.el("td", {}, s.kind === "cron" ? s.timing : s.kind === "interval" ? `every ${s.timing}` : "once"),
      ui.el("td", {}, s.triggered ? "triggered" : ui.ago(s.due_at)),
      ui.el("td", {}, ui.el("button", { type: "button", "data-action": "trigger-schedule",
        onclick: () => ui.confirmThen(`Fire ${s.name} now?`,
          () => ui.post(`/v1/schedules/${encodeURIComponent(s.id)}/trigger`)) }, "Fire now")))),
    "No schedules due.", 4);
    ui.replaceRows(list("schedule-runs"), (panel.recent_runs || []).map((r) => ui.el("tr", { "data-schedule": r.schedule_id },
      ui.el("td", { title: r.schedule_id }, r.schedule_name),
      ui.el("td", {}, ui.ago(r.fire_time)),
      ui.el("td", { class: OUTCOME_CLASS[r.outcome] || "", title: r.error || "" },
        `${r.outcome}${r.http_status ? ` (${r.http_status})` : ""}`),
      ui.el("td", {}, r.attempts), ui.el("td", {}, r.epoch))),
    "No runs yet.", 5);
  }

  document.addEventListener("dashboard:data", (event) => {
    if (window.backburnerDashboard) render(event.detail.schedules || {});
  });
})();
