// Small DOM helpers shared by the pages: element building (text is always
// set as text, never parsed as HTML), the message banner, formatting.

// h("button", {type: "button", onclick}, "Stop") -> <button>
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Replaces the page's content.
export function render(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children);
  return main;
}

let flashTimer = null;

// Shows a message in the banner: errors stay until the next one, notes fade.
export function flash(message, kind = "error") {
  const el = document.getElementById("flash");
  el.textContent = message;
  el.className = kind === "error" ? "" : "info";
  el.hidden = false;
  clearTimeout(flashTimer);
  if (kind !== "error") flashTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

export function clearFlash() {
  const el = document.getElementById("flash");
  el.hidden = true;
}

// Runs an action from a button: disables it meanwhile, shows any API error.
export async function busy(button, action) {
  button.disabled = true;
  try {
    return await action();
  } catch (e) {
    flash(e.message);
    return undefined;
  } finally {
    button.disabled = false;
  }
}

export function badge(mode) {
  return h("span", { class: "badge " + mode }, mode === "live" ? "live" : "sandbox");
}

export function stateText(state) {
  return h("span", { class: "state-" + state, "data-state": state }, state);
}

export function date(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function facts(pairs) {
  return h("dl", { class: "facts" },
    pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

// A copy-to-clipboard button for a secret shown once.
export function copyButton(text, label = "Copy") {
  const button = h("button", { type: "button" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch {
      flash("The browser did not allow copying; select the text and copy it.");
    }
  });
  return button;
}

// 87.5, "USD" -> "87.50 USD"; a debit keeps its minus sign.
export function money(amount, currency) {
  if (amount === null || amount === undefined) return "—";
  return `${Number(amount).toFixed(2)} ${currency || ""}`.trim();
}

// Previous/Next buttons for a paginated answer; `go(page)` loads a page.
export function pager(idPrefix, pagination, go) {
  const p = pagination || { page: 1, totalPages: 1, hasPrev: false, hasNext: false };
  const prev = h("button", { type: "button", id: `${idPrefix}-prev`, disabled: !p.hasPrev }, "Previous");
  const next = h("button", { type: "button", id: `${idPrefix}-next`, disabled: !p.hasNext }, "Next");
  prev.addEventListener("click", () => busy(prev, () => go(p.page - 1)));
  next.addEventListener("click", () => busy(next, () => go(p.page + 1)));
  return h("div", { class: "row" }, prev,
    h("span", { class: "muted", id: `${idPrefix}-page` }, `page ${p.page} of ${Math.max(p.totalPages, 1)}`), next);
}
