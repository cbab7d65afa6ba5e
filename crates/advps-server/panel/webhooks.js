// The webhooks page: the account's endpoints (create, with the signing
// secret shown once; rotate the secret; delete) and one endpoint's
// deliveries, page by page, each of which can be sent again.

import * as api from "./api.js";
import { h, render, flash, busy, date, copyButton, pager } from "./ui.js";

const EVENTS = ["task.completed", "task.failed", "service.power_state_changed",
  "order.completed", "order.failed", "product.stock_changed"];

// The secret of a new or rotated endpoint: the only time it is shown.
function secretBox(title, hook) {
  return h("div", { class: "card" },
    h("h2", {}, title),
    h("p", { class: "warning" }, "Shown only this once: store it now. It signs every event sent to ", hook.url, "."),
    hook.previousSecretValidUntil
      ? h("p", { class: "muted" }, `The previous secret also signs until ${date(hook.previousSecretValidUntil)}.`) : null,
    h("div", { class: "row" }, h("code", { class: "secret", id: "webhook-secret" }, hook.secret), copyButton(hook.secret)));
}

export async function webhooksPage() {
  const list = h("div", { id: "webhooks" });
  const shown = h("div", { id: "new-webhook" });
  const deliveries = h("div", { id: "deliveries" });

  const url = h("input", { id: "webhook-url", name: "url", type: "url", required: true,
    placeholder: "https://hooks.example.com/advps", size: 40 });
  const description = h("input", { id: "webhook-description", name: "description", maxlength: 200 });
  const boxes = EVENTS.map((e) => h("input", { type: "checkbox", id: `event-${e}`, value: e }));
  const create = h("button", { type: "submit", id: "create-webhook", class: "primary" }, "Create");
  const form = h("form", { class: "card", id: "webhook-form" },
    h("h2", {}, "New endpoint"),
    h("label", { for: "webhook-url" }, "URL"), url,
    h("label", { for: "webhook-description" }, "Description (optional)"), description,
    h("fieldset", {},
      h("legend", {}, "Events (none ticked: all of them)"),
      EVENTS.map((e, i) => h("div", {}, boxes[i], " ", h("label", { for: boxes[i].id, class: "inline" }, e)))),
    h("div", { class: "row" }, create));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(create, async () => {
      const events = boxes.filter((b) => b.checked).map((b) => b.value);
      const body = { url: url.value.trim(), events };
      if (description.value.trim()) body.description = description.value.trim();
      const hook = await api.post("/webhooks", body);
      shown.replaceChildren(secretBox(`Endpoint ${hook.id} created`, hook));
      url.value = "";
      description.value = "";
      await load();
    });
  });

  async function load() {
    const data = await api.get("/webhooks");
    if (!data.webhooks.length) {
      list.replaceChildren(h("p", { class: "muted" }, "No webhook endpoints yet."));
      return;
    }
    list.replaceChildren(h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Endpoint", "Events", "Created", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, data.webhooks.map((w) => {
        const show = h("button", { type: "button", "data-deliveries": w.id }, "Deliveries");
        show.addEventListener("click", () => busy(show, () => showDeliveries(w, 1)));
        const rotate = h("button", { type: "button", "data-rotate": w.id }, "Rotate secret");
        rotate.addEventListener("click", () => busy(rotate, async () => {
          const hook = await api.post(`/webhooks/${encodeURIComponent(w.id)}/rotate-secret`);
          shown.replaceChildren(secretBox(`New secret for ${hook.id}`, hook));
        }));
        const remove = h("button", { type: "button", class: "danger", "data-delete": w.id }, "Delete");
        remove.addEventListener("click", () => busy(remove, async () => {
          await api.del(`/webhooks/${encodeURIComponent(w.id)}`);
          flash(`Endpoint ${w.id} deleted`, "info");
          if (deliveries.dataset.webhook === w.id) deliveries.replaceChildren();
          await load();
        }));
        return h("tr", { "data-webhook": w.id },
          h("td", {}, h("code", {}, w.url), h("div", { class: "muted" }, w.description || w.id)),
          h("td", {}, w.events.join(", ")),
          h("td", {}, date(w.createdAt)),
          h("td", {}, h("div", { class: "row" }, show, rotate, remove)));
      })))));
  }

  // One page of an endpoint's deliveries, newest first.
  async function showDeliveries(w, page) {
    const data = await api.get(`/webhooks/${encodeURIComponent(w.id)}/deliveries?page=${page}&limit=10`);
    const again = h("button", { type: "button", id: "deliveries-refresh" }, "Refresh");
    again.addEventListener("click", () => busy(again, () => showDeliveries(w, page)));
    deliveries.dataset.webhook = w.id;
    deliveries.replaceChildren(h("section", { class: "card" },
      h("h2", {}, "Deliveries to ", h("code", {}, w.url)),
      data.deliveries.length ? h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Event", "Status", "Attempts", "Last answer", "Created", ""].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, data.deliveries.map((d) => {
          const redeliver = h("button", { type: "button", "data-redeliver": d.id }, "Redeliver");
          redeliver.addEventListener("click", () => busy(redeliver, async () => {
            const r = await api.post(`/webhooks/${encodeURIComponent(w.id)}/deliveries/${encodeURIComponent(d.id)}/redeliver`);
            flash(`Delivery ${r.id} ${r.status}`, "info");
            await showDeliveries(w, page);
          }));
          return h("tr", { "data-delivery": d.id },
            h("td", {}, d.eventType, h("div", { class: "muted" }, d.id)),
            h("td", { "data-status": d.status }, d.status,
              d.nextAttemptAt ? h("div", { class: "muted" }, `next ${date(d.nextAttemptAt)}`) : null),
            h("td", {}, String(d.attempts)),
            h("td", {}, d.lastStatusCode ?? "—", d.lastError ? h("div", { class: "muted" }, d.lastError) : null),
            h("td", {}, date(d.createdAt),
              d.deliveredAt ? h("div", { class: "muted" }, `delivered ${date(d.deliveredAt)}`) : null),
            h("td", {}, redeliver));
        })))) : h("p", { class: "muted" }, "No deliveries yet."),
      pager("deliveries", data.pagination, (n) => showDeliveries(w, n)),
      h("div", { class: "row" }, again)));
  }

  render(h("h1", {}, "Webhooks"),
    h("p", { class: "muted" },
      "Endpoints receive signed events (webhook-id, webhook-timestamp, webhook-signature). ",
      "Unless the operator allows them, private and loopback addresses are refused."),
    form, shown,
    h("section", { class: "card" }, h("h2", {}, "Endpoints"), list),
    deliveries);
  await load();
  return null;
}
