// The services list: GET /services, every page of it.

import * as api from "./api.js";
import { h, render, stateText, badge, date } from "./ui.js";

export async function servicesPage(session) {
  render(h("h1", {}, "Services"), h("p", {}, "Loading…"));
  const rows = [];
  for (let page = 1; page <= 50; page++) {
    const data = await api.get(`/services?page=${page}&limit=100`);
    rows.push(...data.services);
    if (!data.pagination || !data.pagination.hasNext) break;
  }
  const table = h("table", { id: "services" },
    h("thead", {}, h("tr", {},
      ["Service", "State", "Address", "OS", "Expires", "Mode"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((s) => h("tr", { "data-service": s.serviceId },
      h("td", {}, h("a", { href: `#/service/${encodeURIComponent(s.serviceId)}` }, s.serviceId),
        h("div", { class: "muted" }, s.serviceType)),
      h("td", {}, stateText(s.runningStatus)),
      h("td", {}, s.ip || "—"),
      h("td", {}, s.os ? s.os.name : "—"),
      h("td", {}, s.expiryDate ? date(s.expiryDate) : "never"),
      h("td", {}, badge(session.mode))))));
  render(h("h1", {}, "Services"),
    rows.length ? h("div", { class: "card table-wrap" }, table)
      : h("p", { class: "card" }, "No services in this account and mode."));
  return null;
}
