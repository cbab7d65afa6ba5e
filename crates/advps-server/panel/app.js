// The panel's entry: the session, the hash routes and the page frame.
//   #/services           the services list
//   #/service/{id}       one service
//   #/buy                buy containers and virtual machines
//   #/orders             orders, renewal and the wallet
//   #/webhooks           webhook endpoints and their deliveries
//   #/audit[/{id}]       the audit log, of every service or of one
//   #/keys               API keys and the key's quota
// Without a session every route shows the sign-in form.

import * as api from "./api.js";
import { h, render, flash, clearFlash } from "./ui.js";
import { servicesPage } from "./services.js";
import { servicePage } from "./service.js";
import { ordersPage, keysPage } from "./account.js";
import { buyPage } from "./buy.js";
import { webhooksPage } from "./webhooks.js";
import { auditPage } from "./audit.js";

let session = null;
// Each page may leave something running (polling, a console): it returns a
// function that stops it, called when the page changes.
let leave = null;

function frame() {
  const signedIn = session !== null;
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  const who = document.getElementById("who");
  who.replaceChildren();
  if (signedIn) {
    who.append(`${session.account} · key …${session.keyLast4} `,
      h("span", { class: "badge " + session.mode }, session.mode === "live" ? "live" : "sandbox"));
  }
}

function signInPage() {
  const input = h("input", {
    id: "api-key", name: "api-key", type: "password", autocomplete: "off",
    spellcheck: "false", required: true, placeholder: "sk_test_… or sk_live_…",
  });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "card signin", id: "sign-in" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" },
      "Sign in with an API key. The key is sent once to start a session and is not kept by the browser."),
    h("label", { for: "api-key" }, "API key"),
    input,
    h("div", { class: "row" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      session = await api.signIn(input.value.trim());
      input.value = "";
      clearFlash();
      frame();
      if (!location.hash || location.hash === "#/signin") location.hash = "#/services";
      else route();
    } catch (e) {
      flash(e.message);
    } finally {
      submit.disabled = false;
    }
  });
  render(form);
  input.focus();
}

async function route() {
  if (leave) { leave(); leave = null; }
  if (!session) { signInPage(); return; }
  const [, page, arg] = (location.hash || "#/services").split("/");
  const main = document.getElementById("main");
  try {
    switch (page) {
      case "service": leave = await servicePage(decodeURIComponent(arg || ""), session); break;
      case "buy": leave = await buyPage(session); break;
      case "orders": leave = await ordersPage(session); break;
      case "webhooks": leave = await webhooksPage(session); break;
      case "audit": leave = await auditPage(session, decodeURIComponent(arg || "")); break;
      case "keys": leave = await keysPage(session); break;
      default: leave = await servicesPage(session);
    }
  } catch (e) {
    flash(e.message);
  }
  // Focus goes to the new page for keyboard and screen-reader users, unless
  // the user is already in it (typing while the page's data still loaded, or
  // the page focused its own first field): taking focus away then would
  // send their keys elsewhere.
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => { clearFlash(); route(); });
window.addEventListener("panel:signed-out", (event) => {
  if (!session) return;
  session = null;
  frame();
  if (leave) { leave(); leave = null; }
  signInPage();
  flash(event.detail || "Signed out");
});
document.getElementById("sign-out").addEventListener("click", async () => {
  try { await api.signOut(); } catch (e) { flash(e.message); }
  session = null;
  frame();
  if (leave) { leave(); leave = null; }
  location.hash = "#/signin";
  signInPage();
});

(async () => {
  try {
    session = await api.currentSession();
  } catch (e) {
    flash(e.message);
  }
  frame();
  route();
})();
