// The service's console in the page (xterm.js): POST /services/{id}/console
// hands out a single-use WebSocket URL on this server; binary frames carry
// the console's bytes both ways, text frames carry resizes.

import { Terminal } from "./vendor/xterm/xterm.mjs";
import { FitAddon } from "./vendor/addon-fit/addon-fit.mjs";
import * as api from "./api.js";
import { h, flash, busy } from "./ui.js";

const CLOSE_REASONS = {
  1000: "The console ended.",
  4000: "The service stopped.",
  4001: "A rebuild began.",
  4003: "The key was revoked.",
  4004: "The service was removed.",
  1011: "The engine's console failed.",
};

export function consoleSection(path) {
  const box = h("div", { class: "terminal", id: "terminal", hidden: true });
  const state = h("span", { id: "console-state", "aria-live": "polite" });
  const open = h("button", { type: "button", id: "open-console" }, "Open console");
  const close = h("button", { type: "button", id: "close-console", disabled: true }, "Close console");
  let socket = null;
  let term = null;
  let fit = null;
  const encoder = new TextEncoder();

  function teardown() {
    if (socket) { socket.onclose = null; socket.close(); socket = null; }
    if (term) { term.dispose(); term = null; }
    window.removeEventListener("resize", onResize);
    box.hidden = true;
    open.disabled = false;
    close.disabled = true;
  }

  function onResize() {
    if (fit) fit.fit();
  }

  open.addEventListener("click", () => busy(open, async () => {
    const data = await api.post(`${path}/console`);
    box.hidden = false;
    term = new Terminal({ cursorBlink: true, convertEol: false, fontSize: 14 });
    fit = new FitAddon();
    term.loadAddon(fit);
    term.open(box);
    fit.fit();
    const url = new URL(data.url);
    url.searchParams.set("cols", term.cols);
    url.searchParams.set("rows", term.rows);
    socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      state.textContent = "Connected";
      open.disabled = true;
      close.disabled = false;
      term.focus();
    };
    socket.onmessage = (event) => {
      if (typeof event.data === "string") {
        try {
          const msg = JSON.parse(event.data);
          if (msg.type === "error") flash(msg.message);
        } catch { /* not a control message */ }
        return;
      }
      term.write(new Uint8Array(event.data));
    };
    socket.onclose = (event) => {
      state.textContent = CLOSE_REASONS[event.code] || `Closed (${event.code}).`;
      socket = null;
      open.disabled = false;
      close.disabled = true;
    };
    term.onData((text) => {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(text));
    });
    term.onResize(({ cols, rows }) => {
      if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify({ type: "resize", cols, rows }));
      }
    });
    window.addEventListener("resize", onResize);
    open.disabled = true;
  }));
  close.addEventListener("click", () => { teardown(); state.textContent = "Closed."; });

  const element = h("section", { class: "card", "aria-labelledby": "console-h" },
    h("h2", { id: "console-h" }, "Console"),
    h("div", { class: "row" }, open, close, state),
    box);
  return { element, stop: teardown };
}
