// The audit log (#/audit, or #/audit/{serviceId} for one service): every
// mutating call of this account and mode, newest first, page by page,
// filtered by service and by a time range (in UTC, as the panel shows times).

import * as api from "./api.js";
import { h, render, flash, date, pager } from "./ui.js";

const LIMIT = 10;

// "2026-12-02T14:05" from a datetime-local input, read as UTC.
function utc(value) {
  if (!value) return null;
  return new Date(value + (value.length === 16 ? ":00Z" : "Z")).toISOString();
}

export async function auditPage(session, serviceId = "") {
  const service = h("select", { id: "audit-service", name: "audit-service" },
    h("option", { value: "" }, "All services"));
  const from = h("input", { id: "audit-from", name: "audit-from", type: "datetime-local" });
  const to = h("input", { id: "audit-to", name: "audit-to", type: "datetime-local" });
  const list = h("div", { id: "audit", "aria-live": "polite" }, "Loading…");

  // The account's services for the filter; the one asked for is offered
  // even when it is not among them (the log keeps deleted services too).
  try {
    const data = await api.get("/services?page=1&limit=100");
    service.append(...data.services.map((s) => h("option", { value: s.serviceId }, s.serviceId)));
  } catch (e) {
    flash(e.message);
  }
  if (serviceId && ![...service.options].some((o) => o.value === serviceId)) {
    service.append(h("option", { value: serviceId }, serviceId));
  }
  service.value = serviceId;

  // One page of entries under the filter the form holds.
  async function load(page) {
    const q = new URLSearchParams({ page, limit: LIMIT });
    if (service.value) q.set("serviceId", service.value);
    const f = utc(from.value);
    const t = utc(to.value);
    if (f) q.set("from", f);
    if (t) q.set("to", t);
    const data = await api.get(`/audit?${q}`);
    list.dataset.service = service.value;
    list.replaceChildren(data.entries.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Time", "Method", "Path", "Service", "Status", "Request id", "Task / order"]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, data.entries.map((e) => h("tr", {
        "data-entry": e.id, "data-path": e.path, "data-status": e.status, "data-service": e.serviceId || "",
      },
        h("td", {}, seconds(e.time)),
        h("td", {}, e.method),
        h("td", { class: "path" }, h("code", {}, breakable(e.path))),
        h("td", {}, e.serviceId
          ? h("a", { href: `#/service/${encodeURIComponent(e.serviceId)}` }, e.serviceId) : "—"),
        h("td", { class: e.status < 400 ? "ok" : "bad" }, String(e.status)),
        h("td", {}, h("code", {}, e.requestId)),
        h("td", {}, e.taskId ? h("div", {}, "task ", h("code", {}, e.taskId)) : null,
          e.orderId ? h("div", {}, "order ", h("code", {}, e.orderId)) : null,
          e.taskId || e.orderId ? null : "—")))))) : h("p", { class: "muted" }, "No calls recorded for this filter."),
    pager("audit", data.pagination, load));
  }

  const submit = h("button", { type: "submit", class: "primary" }, "Show");
  const form = h("form", { class: "card", id: "audit-form" },
    h("div", { class: "grid" },
      h("div", {}, h("label", { for: "audit-service" }, "Service"), service),
      h("div", {}, h("label", { for: "audit-from" }, "From (UTC)"), from),
      h("div", {}, h("label", { for: "audit-to" }, "To (UTC)"), to)),
    h("div", { class: "row" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      // The address names the service shown, without loading the page again.
      const hash = service.value ? `#/audit/${encodeURIComponent(service.value)}` : "#/audit";
      if (location.hash !== hash) history.replaceState(null, "", hash);
      await load(1);
    } catch (e) {
      flash(e.message);
    } finally {
      submit.disabled = false;
    }
  });

  render(h("h1", {}, "Audit log"),
    h("p", { class: "muted" },
      "Every call that changed something in this account and mode, newest first: what was asked, how it was answered, ",
      "and the task or order it started. Request bodies are never recorded."),
    form,
    h("section", { class: "card", "aria-label": "Audit entries" }, list));
  try {
    await load(1);
  } catch (e) {
    list.textContent = "—";
    flash(e.message);
  }
  return null;
}

// The log's times to the second: calls often come seconds apart.
function seconds(iso) {
  const d = new Date(iso);
  return isNaN(d) ? date(iso) : d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

// A path that may wrap after each "/" only, never inside a word.
function breakable(path) {
  return path.split(/(?<=\/)/).flatMap((part, i) => (i ? [h("wbr"), part] : [part]));
}
