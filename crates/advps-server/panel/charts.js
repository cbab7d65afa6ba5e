// Usage history charts (uPlot): CPU, memory and network of one service over
// 1 h, 24 h, 7 d or 30 d, from GET /services/{id}/metrics. The answer's ETag
// is sent back, so looking again at an unchanged period costs no quota.

import uPlot from "./vendor/uplot/uPlot.esm.js";
import * as api from "./api.js";
import { h, flash, bytes } from "./ui.js";

const PERIODS = [["1h", 3600], ["24h", 86400], ["7d", 7 * 86400], ["30d", 30 * 86400]];

export function chartsSection(path, onLeave) {
  const area = h("div", { id: "charts" });
  const buttons = PERIODS.map(([label, seconds]) => {
    const b = h("button", { type: "button", "data-period": label, "aria-pressed": "false" }, label);
    b.addEventListener("click", () => show(label, seconds));
    return b;
  });
  let plots = [];
  const cache = new Map();
  const resize = () => {
    for (const p of plots) p.setSize({ width: width(), height: 160 });
  };
  window.addEventListener("resize", resize);
  onLeave(() => {
    window.removeEventListener("resize", resize);
    for (const p of plots) p.destroy();
  });
  const width = () => Math.max(260, area.clientWidth - 8);

  async function show(label, seconds) {
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.period === label));
    const end = new Date();
    const start = new Date(end.getTime() - seconds * 1000);
    const query = `?type=cpu,memory,network&start=${start.toISOString()}&end=${end.toISOString()}`;
    let data;
    try {
      const known = cache.get(label);
      const headers = known ? { "If-None-Match": known.etag } : {};
      const res = await api.call("GET", `${path}/metrics${query}`, { headers });
      if (res.status === 304 && known) {
        data = known.data;
      } else {
        data = res.body.data;
        const etag = res.headers.get("ETag");
        if (etag) cache.set(label, { etag, data });
      }
    } catch (e) {
      flash(e.message);
      return;
    }
    for (const p of plots) p.destroy();
    plots = [];
    area.replaceChildren();
    area.dataset.period = label;
    const ts = data.timeSeries;
    // The whole period on the time axis, however few samples it has.
    const span = [Date.parse(data.start) / 1000, Date.parse(data.end) / 1000];
    draw("cpu", "CPU (%)", [["cpu", ts.cpu || []]], (v) => v.toFixed(0) + "%", span);
    draw("memory", "Memory used", [["memory", ts["memory.used"] || []]], bytes, span);
    draw("network", "Network (bytes/s)", [["in", ts["network.in"] || []], ["out", ts["network.out"] || []]],
      (v) => bytes(v) + "/s", span);
  }

  function draw(key, title, series, fmt, span) {
    const box = h("div", { class: "chart", "data-chart": key });
    area.append(h("div", { class: "chart-title" }, title), box);
    const times = [...new Set(series.flatMap(([, pts]) => pts.map((p) => p[0])))].sort((a, b) => a - b);
    if (!times.length) {
      box.append(h("p", { class: "muted" }, "No samples in this period yet."));
      return;
    }
    const columns = series.map(([, pts]) => {
      const at = new Map(pts.map((p) => [p[0], p[1]]));
      return times.map((t) => (at.has(t) ? at.get(t) : null));
    });
    const colors = ["#0b5cad", "#cf222e"];
    const plot = new uPlot({
      width: width(), height: 160,
      series: [{}, ...series.map(([name], i) => ({ label: name, stroke: colors[i], width: 1.5, value: (u, v) => (v === null ? "—" : fmt(v)) }))],
      scales: { x: { time: true, range: () => span } },
      axes: [{}, { values: (u, vals) => vals.map(fmt), size: 70 }],
    }, [times, ...columns], box);
    plots.push(plot);
  }

  return h("section", { class: "card", "aria-labelledby": "charts-h" },
    h("h2", { id: "charts-h" }, "Usage history"),
    h("div", { class: "row", role: "group", "aria-label": "Period" }, buttons),
    area);
}
