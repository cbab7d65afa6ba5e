// The account's pages: orders and wallet (the balance, the ledger and the
// orders page by page; an order shown, its services renewed inside the
// renewal window) and API keys (list, create, revoke, and the calling key's
// quota from GET /me, which itself costs none).

import * as api from "./api.js";
import { h, render, flash, busy, stateText, date, facts, copyButton, money, pager } from "./ui.js";

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
  const balance = h("p", { id: "balance", class: "balance" }, "Loading…");
  const ledger = h("div", { id: "ledger" });
  const orders = h("div", { id: "orders" });

  // Shows one order (with its renewal form) below the tables.
  async function open(orderId) {
    showOrder(result, await api.get(`/purchase/${encodeURIComponent(orderId)}`));
    result.scrollIntoView({ block: "nearest" });
  }
  const orderLink = (orderId) => {
    const b = h("button", { type: "button", class: "link", "data-open-order": orderId }, orderId);
    b.addEventListener("click", () => busy(b, () => open(orderId)));
    return b;
  };

  // The balance and one page of the ledger, newest first.
  async function loadWallet(page) {
    const w = await api.get(`/wallet?page=${page}&limit=10`);
    balance.replaceChildren(h("span", { class: "muted" }, "Balance "),
      h("strong", { "data-amount": w.balance }, money(w.balance, w.currency)));
    ledger.replaceChildren(w.entries.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Date", "Kind", "Amount", "Reference", "Note"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, w.entries.map((e) => h("tr", { "data-entry": e.id, "data-kind": e.kind },
        h("td", {}, date(e.createdAt)),
        h("td", {}, e.kind),
        h("td", { class: e.amount < 0 ? "debit" : "credit", "data-amount": e.amount }, money(e.amount, e.currency)),
        h("td", {}, e.reference && e.kind !== "credit" ? orderLink(e.reference) : e.reference || "—"),
        h("td", {}, e.note || "—")))))) : h("p", { class: "muted" }, "No wallet entries yet."),
    pager("ledger", w.pagination, loadWallet));
  }

  // One page of the account's orders, newest first.
  async function loadOrders(page) {
    const data = await api.get(`/orders?page=${page}&limit=10`);
    orders.replaceChildren(data.orders.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Order", "Status", "Product", "Total", "Placed"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, data.orders.map((o) => h("tr", { "data-order": o.orderId },
        h("td", {}, orderLink(o.orderId)),
        h("td", { "data-status": o.status }, o.status),
        h("td", {}, `${o.productId} (${o.ram})`, h("div", { class: "muted" }, `${o.quantity} × ${o.validity} days`)),
        h("td", {}, money(o.totalAmount, o.currency)),
        h("td", {}, date(o.createdAt))))))) : h("p", { class: "muted" }, "No orders yet."),
    pager("orders", data.pagination, loadOrders));
  }

  const form = h("form", { class: "card", id: "order-form" },
    h("h2", {}, "Look up an order"),
    h("label", { for: "order-id" }, "Order id"),
    h("div", { class: "row" }, input, h("button", { type: "submit", class: "primary" }, "Show")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await open(input.value.trim());
    } catch (e) {
      flash(e.message);
    }
  });
  render(h("h1", {}, "Orders & wallet"),
    h("section", { class: "card", "aria-labelledby": "wallet-h" },
      h("h2", { id: "wallet-h" }, "Wallet"), balance,
      h("p", { class: "muted" },
        "Orders and renewals are paid from the account's wallet. An answer that the wallet cannot pay shows ",
        "“Insufficient wallet balance”; the operator tops the wallet up."),
      ledger),
    h("section", { class: "card", "aria-labelledby": "orders-h" },
      h("h2", { id: "orders-h" }, "Orders"), orders),
    form, result);
  // Each part shows its own failure; the rest of the page still works.
  await Promise.all([
    loadWallet(1).catch((e) => { balance.textContent = "—"; flash(e.message); }),
    loadOrders(1).catch((e) => flash(e.message)),
  ]);
  input.focus({ preventScroll: true });
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
    out.replaceChildren(h("p", {}, `Renewed for ${money(res.totalAmount, res.currency)}: `,
      res.services.map((s) => `${s.serviceId} until ${date(s.expiryDate)}`).join(", ")));
  }));
  box.replaceChildren(h("section", { class: "card" },
    h("h2", {}, `Order ${o.orderId}`),
    facts([["Status", o.status], ["Product", `${o.productId} (${o.ram})`], ["OS", o.os.name],
      ["Quantity", o.quantity], ["Validity", `${o.validity} days`],
      ["Total", money(o.totalAmount, o.currency)], ["Placed", date(o.createdAt)]]),
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

// The calling key and what is left of its quota in the current window.
async function loadQuota(box) {
  const me = await api.get("/me");
  const q = me.rateLimit;
  const resetAt = new Date(Date.now() + q.resetSeconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  box.dataset.limit = q.limit;
  box.dataset.remaining = q.remaining;
  box.dataset.reset = q.resetSeconds;
  box.replaceChildren(facts([
    ["Key", h("span", {}, h("code", {}, `${me.keyPrefix}…${me.keyLast4}`), " ", h("span", { class: "muted" }, me.keyId))],
    ["Account", me.account],
    ["Requests left", h("span", { id: "quota-remaining" }, `${q.remaining} of ${q.limit}`)],
    ["Window", `${q.windowSeconds} s (policy “${q.policy}”)`],
    ["Window resets", h("span", { id: "quota-reset" }, `in ${q.resetSeconds} s, at ${resetAt}`)],
    ["Created", date(me.createdAt)],
    ["Last used", date(me.lastUsedAt)],
  ]));
}

export async function keysPage() {
  const quota = h("div", { id: "quota" }, "Loading…");
  const refreshQuota = h("button", { type: "button", id: "quota-refresh" }, "Refresh");
  refreshQuota.addEventListener("click", () => busy(refreshQuota, () => loadQuota(quota)));
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
    // After the list, so the figures include the call that read it.
    await loadQuota(quota).catch((e) => { quota.textContent = "—"; flash(e.message); });
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
    h("section", { class: "card", "aria-labelledby": "quota-h" },
      h("h2", { id: "quota-h" }, "This session's key and its quota"), quota,
      h("p", { class: "muted" }, "Every API call but this one counts against the key's quota, the panel's own too."),
      h("div", { class: "row" }, refreshQuota)),
    h("div", { class: "row" }, create), created,
    h("section", { class: "card" }, list));
  await load();
  return null;
}
