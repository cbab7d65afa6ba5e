// One service: power, status with live usage, charts, address, password,
// rebuild with its progress, a new MAC address (VPS only), the console, and
// a link to the service's audit log.

import * as api from "./api.js";
import { h, render, flash, busy, stateText, badge, date, bytes, facts, copyButton } from "./ui.js";
import { chartsSection } from "./charts.js";
import { consoleSection } from "./console.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function servicePage(id, session) {
  const path = `/services/${encodeURIComponent(id)}`;
  let stopped = false;
  const stops = [];
  const statusBox = h("div", { id: "status" }, "Loading…");
  const usageBox = h("div", { id: "usage" });
  const stateBox = h("span", { id: "state" });
  let current = null;

  async function refresh() {
    const data = await api.get(`${path}/status`);
    current = data;
    stateBox.replaceChildren(stateText(data.runningStatus));
    statusBox.replaceChildren(facts([
      ["Type", data.serviceType],
      ["Address", data.ip || "—"],
      ["OS", data.service.os ? data.service.os.name : "—"],
      ["Expires", data.service.expiryDate ? date(data.service.expiryDate) : "never"],
      ["Uptime", data.uptime === null ? "—" : `${data.uptime} s`],
      ["Engine state", data.vmStatus.status],
    ]));
    const r = data.resources;
    const pct = (v) => (v === null || v === undefined ? "—" : `${v.toFixed(1)} %`);
    const rate = (v) => (v === null || v === undefined ? "—" : `${bytes(v)}/s`);
    usageBox.replaceChildren(facts([
      ["CPU", `${pct(r.cpu.usagePercent)} of ${r.cpu.cores ?? "?"} cores`],
      ["Memory", `${bytes(r.memory.usedBytes)} of ${bytes(r.memory.totalBytes)}`],
      ["Disk", `${bytes(r.disk.usedBytes)} of ${bytes(r.disk.totalBytes)}`],
      ["Network in", rate(r.network.rxBytesPerSecond)],
      ["Network out", rate(r.network.txBytesPerSecond)],
      ["Measured", date(r.sampledAt)],
    ]));
    for (const b of powerButtons) b.disabled = data.runningStatus === "REBUILDING";
  }

  // Live usage: read again while the page is open (less often in live
  // mode, whose quota is smaller).
  (async () => {
    const every = session.mode === "live" ? 30000 : 5000;
    while (!stopped) {
      await sleep(every);
      if (stopped || document.hidden) continue;
      try { await refresh(); } catch (e) { if (!stopped) flash(e.message); }
    }
  })();

  // Power.
  const powerMode = h("select", { id: "power-mode" },
    h("option", { value: "graceful" }, "graceful"), h("option", { value: "force" }, "force"));
  const power = (action) => {
    const button = h("button", { type: "button", id: action }, action[0].toUpperCase() + action.slice(1));
    button.addEventListener("click", () => busy(button, async () => {
      const body = action === "start" ? undefined : { mode: powerMode.value };
      const data = await api.post(`${path}/${action}`, body);
      flash(`${id}: ${data.status}`, "info");
      await refresh();
    }));
    return button;
  };
  const powerButtons = [power("start"), power("stop"), power("reboot")];

  // Address.
  const ipOut = h("span", { id: "ip-result" });
  const ipButton = h("button", { type: "button", id: "get-ip" }, "Get IP");
  ipButton.addEventListener("click", () => busy(ipButton, async () => {
    const data = await api.post(`${path}/get-ip`);
    ipOut.textContent = data.ip;
    await refresh();
  }));

  // Password: shown once.
  const pwOut = h("div", { id: "password-result" });
  const pwButton = h("button", { type: "button", id: "generate-password" }, "Generate password");
  pwButton.addEventListener("click", () => busy(pwButton, async () => {
    const data = await api.post(`${path}/generate-password`);
    pwOut.replaceChildren(
      h("p", { class: "warning" }, "Shown only this once: copy it now. It replaces the old password."),
      h("div", { class: "row" }, h("code", { class: "secret", id: "password" }, data.password),
        copyButton(data.password)));
  }));

  // MAC address (VPS only): a new one, after a confirmation, since the
  // guest restarts for it and anything keyed to the old one stops working.
  const macOut = h("div", { id: "mac-result", "aria-live": "polite" });
  const macButton = h("button", { type: "button", id: "reset-mac", class: "danger" }, "Reset MAC address");
  const macYes = h("button", { type: "button", id: "reset-mac-confirm", class: "danger" }, "Yes, reset it");
  const macNo = h("button", { type: "button", id: "reset-mac-cancel" }, "Cancel");
  const macAsk = h("div", { id: "reset-mac-ask", hidden: true },
    h("p", { class: "warning" },
      "The machine gets a new MAC address: a running guest restarts, and a network setup or licence tied to the old address stops matching. This can be done once a day."),
    h("div", { class: "row" }, macYes, macNo));
  const askMac = (open) => {
    macAsk.hidden = !open;
    macButton.hidden = open;
    (open ? macYes : macButton).focus();
  };
  macButton.addEventListener("click", () => askMac(true));
  macNo.addEventListener("click", () => askMac(false));
  macYes.addEventListener("click", () => busy(macYes, async () => {
    try {
      const data = await api.post(`${path}/reset-mac`);
      macOut.replaceChildren(h("p", {}, "New MAC address: ",
        h("code", { class: "mac", id: "mac" }, data.mac)));
      flash(`${id}: MAC address reset`, "info");
    } finally {
      askMac(false);
    }
  }));

  // Rebuild.
  const osSelect = h("select", { id: "rebuild-os" });
  const bar = h("progress", { id: "rebuild-progress", max: 100, value: 0, hidden: true });
  const barText = h("span", { id: "rebuild-state", "aria-live": "polite" });
  const rebuildButton = h("button", { type: "button", id: "rebuild", class: "danger" }, "Rebuild");
  rebuildButton.addEventListener("click", () => busy(rebuildButton, async () => {
    const data = await api.post(`${path}/rebuild`, { os: osSelect.value });
    await follow(data.taskId);
  }));

  // Follows a task to COMPLETED or FAILED: sends its ETag back (an unchanged
  // task costs no quota) and waits as long as Retry-After says.
  async function follow(taskId) {
    bar.hidden = false;
    let etag = null;
    let task = null;
    while (!stopped) {
      const headers = etag ? { "If-None-Match": etag } : {};
      const res = await api.call("GET", `/services/task/${encodeURIComponent(taskId)}/status`, { headers });
      if (res.status !== 304) {
        task = res.body.data;
        etag = res.headers.get("ETag");
        bar.value = task.progress;
        barText.textContent = `${task.status} ${task.progress}%`;
        barText.dataset.status = task.status;
      }
      if (task && (task.status === "COMPLETED" || task.status === "FAILED")) break;
      const wait = Number(res.headers.get("Retry-After")) || 3;
      await sleep(wait * 1000);
    }
    if (task && task.status === "FAILED") flash(`Rebuild failed: ${task.error || "no reason given"}`);
    else if (task) flash("Rebuild completed", "info");
    if (!stopped) await refresh();
  }

  await refresh();
  const osType = current.serviceType === "LINUX" ? "lxc" : "vps";
  try {
    const os = await api.get(`/os?type=${osType}`);
    osSelect.replaceChildren(...os.os.map((o) => h("option", { value: o.slug }, o.name)));
    const now = current.service.os && os.os.find((o) => o.slug === current.service.os.id);
    if (now) osSelect.value = now.slug;
  } catch (e) {
    flash(e.message);
  }

  const terminal = consoleSection(path, session);
  stops.push(terminal.stop);

  render(
    h("p", {}, h("a", { href: "#/services" }, "← Services")),
    h("h1", {}, id, " ", stateBox, " ", badge(session.mode)),
    h("div", { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "power-h" },
        h("h2", { id: "power-h" }, "Power"),
        h("label", { for: "power-mode" }, "Stop and reboot"),
        h("div", { class: "row" }, powerMode),
        h("div", { class: "row" }, powerButtons)),
      h("section", { class: "card", "aria-labelledby": "status-h" },
        h("h2", { id: "status-h" }, "Status"), statusBox),
      h("section", { class: "card", "aria-labelledby": "usage-h" },
        h("h2", { id: "usage-h" }, "Live usage"), usageBox)),
    chartsSection(path, (stop) => stops.push(stop)),
    h("div", { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "ip-h" },
        h("h2", { id: "ip-h" }, "Address"),
        h("div", { class: "row" }, ipButton, ipOut)),
      h("section", { class: "card", "aria-labelledby": "pw-h" },
        h("h2", { id: "pw-h" }, "Root password"),
        h("div", { class: "row" }, pwButton), pwOut),
      h("section", { class: "card", "aria-labelledby": "rebuild-h" },
        h("h2", { id: "rebuild-h" }, "Rebuild"),
        h("p", { class: "warning" }, "Rebuilding erases the disk."),
        h("label", { for: "rebuild-os" }, "Operating system"),
        h("div", { class: "row" }, osSelect, rebuildButton),
        bar, barText),
      current.serviceType === "VPS" ? h("section", { class: "card", "aria-labelledby": "mac-h" },
        h("h2", { id: "mac-h" }, "Network card"),
        h("div", { class: "row" }, macButton), macAsk, macOut) : null),
    terminal.element,
    h("p", {}, h("a", { id: "service-audit", href: `#/audit/${encodeURIComponent(id)}` }, "Audit log of this service")));

  return () => {
    stopped = true;
    for (const stop of stops) stop();
  };
}
