// The account's pages: orders (look one up, renew its services inside the
// renewal window) and API keys (list, create, revoke).

import * as api from "./api.js";
import { h, render, flash, busy, stateText, date, facts, copyButton } from "./ui.js";

const DAY = 86400000;

// Renewal opens 5 days before expiry and closes 1 day after.
function renewable(expiry) {
  if (!expiry) return false;
  const left = new Date(expiry).getTime() - Date.now();
  return left <= 5 * DAY && left >= -DAY;
}

export async function ordersPage() {
  const input = h("input", { id: "order-id", name: "order-id", required: true, placeholder: "VPS040426-0008" });
  const result = h("div", { id: "order" });
  const form = h("form", { class: "card", id: "order-form" },
    h("h2", {}, "Look up an order"),
    h("label", { for: "order-id" }, "Order id"),
    h("div", { class: "row" }, input, h("button", { type: "submit", class: "primary" }, "Show")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      showOrder(result, await api.get(`/purchase/${encodeURIComponent(input.value.trim())}`));
    } catch (e) {
      flash(e.message);
    }
  });
  render(h("h1", {}, "Orders & wallet"),
    h("p", { class: "card muted" },
      "Orders and renewals are paid from the account's wallet. An answer that the wallet cannot pay shows ",
      "“Insufficient wallet balance”; the operator tops the wallet up."),
    form, result);
  input.focus();
  return null;
}

function showOrder(box, data) {
  const o = data.order;
  const checks = data.services.map((s) => h("input", {
    type: "checkbox", id: `renew-${s.serviceId}`, value: s.serviceId,
    checked: renewable(s.expiryDate), disabled: !renewable(s.expiryDate),
  }));
  const validity = h("input", { id: "renew-days", type: "number", min: 1, max: 365, value: o.validity });
  const renew = h("button", { type: "button", id: "renew", class: "primary" }, "Renew selected");
  const out = h("div", { id: "renew-result" });
  renew.addEventListener("click", () => busy(renew, async () => {
    const ids = checks.filter((c) => c.checked).map((c) => c.value);
    const days = Number(validity.value);
    const res = await api.post("/services/renew", {
      orderId: o.orderId,
      serviceIds: ids,
      serviceValidities: ids.map((serviceId) => ({ serviceId, validity: days })),
    });
    out.replaceChildren(h("p", {}, `Renewed for ${res.totalAmount} ${res.currency}: `,
      res.services.map((s) => `${s.serviceId} until ${date(s.expiryDate)}`).join(", ")));
  }));
  box.replaceChildren(h("section", { class: "card" },
    h("h2", {}, `Order ${o.orderId}`),
    facts([["Status", o.status], ["Product", `${o.productId} (${o.ram})`], ["OS", o.os.name],
      ["Quantity", o.quantity], ["Validity", `${o.validity} days`],
      ["Total", `${o.totalAmount} ${o.currency}`], ["Placed", date(o.createdAt)]]),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Renew", "Service", "State", "Address", "Expires"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, data.services.map((s, i) => h("tr", {},
        h("td", {}, checks[i], h("label", { for: checks[i].id, class: "muted" },
          renewable(s.expiryDate) ? "renewable now" : "not in its renewal window")),
        h("td", {}, h("a", { href: `#/service/${encodeURIComponent(s.serviceId)}` }, s.serviceId)),
        h("td", {}, stateText(s.status)),
        h("td", {}, s.ip || "—"),
        h("td", {}, date(s.expiryDate))))))),
    h("label", { for: "renew-days" }, "Days to add to each"),
    h("div", { class: "row" }, validity, renew),
    out));
}

export async function keysPage() {
  const list = h("div", { id: "keys" });
  const created = h("div", { id: "new-key" });
  const create = h("button", { type: "button", id: "create-key", class: "primary" }, "Create key");

  async function load() {
    const data = await api.get("/keys");
    list.replaceChildren(h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Key", "Created", "Last used", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, data.keys.map((k) => {
        const revoke = h("button", { type: "button", class: "danger", "data-revoke": k.id }, "Revoke");
        revoke.addEventListener("click", () => busy(revoke, async () => {
          await api.del(`/keys/${encodeURIComponent(k.id)}`);
          flash(`Key …${k.last4} revoked`, "info");
          await load();
        }));
        return h("tr", { "data-key": k.id },
          h("td", {}, h("code", {}, k.display), k.current ? h("div", { class: "muted" }, "this session's key") : null),
          h("td", {}, date(k.createdAt)),
          h("td", {}, date(k.lastUsedAt)),
          h("td", {}, revoke));
      })))));
  }

  create.addEventListener("click", () => busy(create, async () => {
    const k = await api.post("/keys");
    created.replaceChildren(h("div", { class: "card" },
      h("p", { class: "warning" }, "Shown only this once: store it now. advps keeps only its digest."),
      h("div", { class: "row" }, h("code", { class: "secret", id: "created-key" }, k.key), copyButton(k.key))));
    await load();
  }));

  render(h("h1", {}, "API keys"),
    h("p", { class: "muted" }, "Keys of this account in this mode. Revoking a key ends its panel sessions too; the last key cannot be revoked."),
    h("div", { class: "row" }, create), created,
    h("section", { class: "card" }, list));
  await load();
  return null;
}
