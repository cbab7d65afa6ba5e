// The purchase page: the products in stock, a form that buys one of them
// (containers through /purchase/linux, virtual machines through
// /purchase/vps), then the order followed to COMPLETED or FAILED with each
// new service's address and password, shown once.

import * as api from "./api.js";
import { h, render, flash, busy, stateText, date, facts, copyButton, money } from "./ui.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A fresh Idempotency-Key. crypto.randomUUID exists only in secure contexts
// (https, localhost); a panel reached over plain http elsewhere still gets
// a random v4 UUID from getRandomValues.
function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, "0")).join("");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

// The stock list names no RAM sizes; a product's name or pack usually says
// it ("4GB Linux Pack"). When the server refuses a size it lists the ones
// it sells (errors.available), which then replace the guess.
function guessSizes(product) {
  const m = `${product.name} ${product.packName}`.match(/(\d+)\s*(GB|MB)/i);
  return m ? [`${m[1]} ${m[2].toUpperCase()}`] : ["1 GB"];
}

const FINAL = ["COMPLETED", "FAILED", "CANCELLED", "REJECTED"];

export async function buyPage() {
  let stopped = false;
  render(h("h1", {}, "Buy"), h("p", {}, "Loading…"));

  const products = [];
  for (let page = 1; page <= 20; page++) {
    const data = await api.get(`/products/stock?page=${page}&limit=100`);
    products.push(...data.stock);
    if (!data.pagination || !data.pagination.hasNext) break;
  }
  const images = (await api.get("/os")).os;
  const sizes = new Map(products.map((p) => [p.id, guessSizes(p)]));

  const productSelect = h("select", { id: "buy-product", name: "product", required: true },
    products.map((p) => h("option", { value: p.id, disabled: p.stock <= 0 },
      `${p.name} (${p.vmType === "LXC" ? "container" : "virtual machine"}, ` +
      (p.stock > 0 ? `${p.stock} in stock)` : "out of stock)"))));
  const firstInStock = products.find((p) => p.stock > 0);
  if (firstInStock) productSelect.value = firstInStock.id;
  else flash("Every product is out of stock for now.", "info");
  const ramSelect = h("select", { id: "buy-ram", name: "ram", required: true });
  const osSelect = h("select", { id: "buy-os", name: "os" });
  const quantity = h("input", { id: "buy-quantity", name: "quantity", type: "number", min: 1, max: 10, value: 1, required: true });
  const validity = h("input", { id: "buy-validity", name: "validity", type: "number", min: 1, max: 365, value: 30, required: true });
  const name = h("input", { id: "buy-name", name: "name", autocomplete: "name" });
  const email = h("input", { id: "buy-email", name: "email", type: "email", autocomplete: "email" });
  const vpsFields = h("div", { id: "buy-vps-fields" },
    h("label", { for: "buy-name" }, "Name"), name,
    h("label", { for: "buy-email" }, "Email"), email);
  const submit = h("button", { type: "submit", id: "buy", class: "primary" }, "Buy");
  const result = h("div", { id: "buy-result" });

  const chosen = () => products.find((p) => p.id === productSelect.value);

  // Fills RAM and OS for the chosen product; VPS purchases need a name and
  // an email, container purchases take none.
  function fit() {
    const p = chosen();
    if (!p) return;
    const options = sizes.get(p.id);
    ramSelect.replaceChildren(...options.map((s) => h("option", { value: s }, s)));
    ramSelect.disabled = options.length < 2;
    const family = p.vmType === "LXC" ? "lxc" : "vps";
    const before = osSelect.value;
    osSelect.replaceChildren(h("option", { value: "" }, "The product's default"),
      ...images.filter((o) => o.type === family).map((o) => h("option", { value: o.slug }, o.name)));
    if ([...osSelect.options].some((o) => o.value === before)) osSelect.value = before;
    const vps = p.vmType !== "LXC";
    vpsFields.hidden = !vps;
    name.required = vps;
    email.required = vps;
  }

  // One key per purchase: a retry after a lost answer replays the first
  // purchase instead of buying again; any change to the form, and any
  // answer, makes the next one a new purchase.
  let key = newKey();
  const form = h("form", { class: "card", id: "buy-form" },
    h("h2", {}, "Order"),
    h("label", { for: "buy-product" }, "Product"), productSelect,
    h("label", { for: "buy-ram" }, "RAM"), ramSelect,
    h("label", { for: "buy-os" }, "Operating system"), osSelect,
    h("div", { class: "grid" },
      h("div", {}, h("label", { for: "buy-quantity" }, "Quantity"), quantity),
      h("div", {}, h("label", { for: "buy-validity" }, "Validity (days)"), validity)),
    vpsFields,
    h("div", { class: "row" }, submit));
  form.addEventListener("input", () => { key = newKey(); });
  productSelect.addEventListener("change", fit);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, async () => {
      const p = chosen();
      const body = {
        productId: p.id, ram: ramSelect.value, osId: osSelect.value || null,
        quantity: Number(quantity.value), validity: Number(validity.value),
      };
      if (p.vmType !== "LXC") Object.assign(body, { name: name.value.trim(), email: email.value.trim() });
      const kind = p.vmType === "LXC" ? "linux" : "vps";
      let data;
      try {
        data = await api.post(`/purchase/${kind}`, body, { "Idempotency-Key": key });
      } catch (e) {
        // An answer the server gave is stored under the key and would be
        // replayed (a refusal too, even once it no longer holds): the next
        // try gets a new key. Only a lost answer, or one still being made,
        // keeps it, so that trying again cannot buy twice.
        const pending = e.status === 0 || (e.status === 409 && /still being processed/.test(e.message));
        if (!pending) key = newKey();
        const available = e.body && e.body.errors && e.body.errors.available;
        if (Array.isArray(available) && available.length) {
          sizes.set(p.id, available);
          fit();
        }
        throw e;
      }
      key = newKey();
      await follow(data);
    });
  });

  // Polls the order about once a second until it is final.
  async function follow(data) {
    const id = data.order.orderId;
    const bar = h("progress", { id: "order-progress", max: 1 });
    const state = h("span", { id: "order-status", "aria-live": "polite" });
    const box = h("div", { id: "order-services" });
    result.replaceChildren(h("section", { class: "card" },
      h("h2", { "data-order": id }, `Order ${id}`), bar, state, box));
    while (!stopped) {
      const o = data.order;
      state.textContent = ` ${o.status}`;
      state.dataset.status = o.status;
      if (FINAL.includes(o.status)) break;
      await sleep(1000);
      if (stopped) return;
      data = await api.get(`/purchase/${encodeURIComponent(id)}`);
    }
    const o = data.order;
    bar.value = 1;
    state.dataset.total = o.totalAmount;
    if (o.status !== "COMPLETED") {
      flash(`Order ${id} ${o.status}: ${o.error || "no reason given"}`);
      return;
    }
    flash(`Order ${id} completed: ${money(o.totalAmount, o.currency)} paid from the wallet`, "info");
    box.replaceChildren(
      facts([["Product", `${o.productId} (${o.ram})`], ["OS", o.os.name],
        ["Total", money(o.totalAmount, o.currency)], ["Placed", date(o.createdAt)]]),
      h("p", { class: "warning" }, "Passwords are shown only this once: copy them now."),
      ...data.services.map((s) => h("div", { class: "card", "data-service": s.serviceId },
        h("h2", {}, h("a", { href: `#/service/${encodeURIComponent(s.serviceId)}` }, s.serviceId), " ", stateText(s.status)),
        facts([["Address", s.ip || "—"], ["User", s.username], ["OS", s.os || "—"],
          ["Expires", date(s.expiryDate)]]),
        s.password ? h("div", { class: "row" },
          h("code", { class: "secret", "data-password": s.serviceId }, s.password), copyButton(s.password)) : null)));
  }

  fit();
  const table = h("table", { id: "products" },
    h("thead", {}, h("tr", {}, ["Product", "Type", "Pack", "Stock"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, products.map((p) => h("tr", { "data-product": p.id },
      h("td", {}, p.name, h("div", { class: "muted" }, p.id)),
      h("td", {}, p.vmType),
      h("td", {}, p.packName),
      h("td", {}, String(p.stock), h("div", { class: "muted" }, p.stockStatus.replaceAll("_", " ").toLowerCase()))))));
  render(h("h1", {}, "Buy"),
    h("p", { class: "muted" }, "Orders are paid from the account's wallet; see Orders & wallet for its balance."),
    form, result,
    h("section", { class: "card" }, h("h2", {}, "Stock"), h("div", { class: "table-wrap" }, table)));
  return () => { stopped = true; };
}
