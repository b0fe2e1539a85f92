// The usage charts, drawn as SVG by hand (no library): per account the 5-hour and weekly
// usage over the last 7 days with each reset marked and the 5-hour forecast to its next reset
// drawn ahead; the pool's combined 5-hour headroom; tokens served per account per day. Each
// chart says in words what it shows (aria-label and a caption) for screen readers.

const SVG = "http://www.w3.org/2000/svg";
const W = 640, H = 150, PAD = { left: 34, right: 8, top: 8, bottom: 20 };
const DAY = 86400000;
/** Account colours are the theme's (`--series-0` to `--series-5` in style.css), so each
 * stays readable on the light and the dark card. */
const SERIES = 6;
const paint = (i) => `var(--series-${i % SERIES})`;

/** Accounts are told apart by key (a renamed account stays one, two workspaces of one email
 * stay two); rows from before keys were kept go by the name they were written under. */
const series = (row) => row.key ?? row.account;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

function text(x, y, value, attrs = {}) {
  const node = svg("text", { x, y, ...attrs });
  node.textContent = value;
  return node;
}

/** A chart frame: time from `from` to `to` across, 0..`top` up; returns it with scales. */
function frame(label, from, to, top, unit) {
  const x = (t) => PAD.left + ((t - from) / (to - from)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (Math.min(v, top) / top) * (H - PAD.top - PAD.bottom);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart" });
  root.append(svg("title", {}, label));
  for (const v of [0, top / 2, top]) {
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
    root.append(text(PAD.left - 4, y(v) + 4, `${short(v)}${unit}`, { class: "axis", "text-anchor": "end" }));
  }
  for (let t = Math.ceil(from / DAY) * DAY; t <= to; t += DAY) {
    const day = new Date(t).toISOString().slice(5, 10);
    // A date at the right edge ends there instead of being cut in half.
    const anchor = x(t) > W - PAD.right - 16 ? "end" : "middle";
    root.append(text(x(t), H - 4, day, { class: "axis", "text-anchor": anchor }));
  }
  return { root, x, y };
}

/** A number that fits the axis: 292600 → "293k", 1250000 → "1.3M". */
function short(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e4) return `${Math.round(v / 1e3)}k`;
  return `${Math.round(v)}`;
}

function path(points, x, y) {
  return points.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
}

/** One account: both windows, resets as ticks, and the 5-hour line carried to its reset. */
function accountChart(name, points, status, data, shade) {
  const windows = { primary: [], secondary: [] };
  for (const p of points) windows[p.window]?.push(p);
  const to = data.now + 5 * 3600000;
  const { root, x, y } = frame("", data.since, to, 100, "%");
  const resets = new Set();
  for (const [window, dash] of [["primary", ""], ["secondary", "5 4"]]) {
    const line = windows[window].map((p) => [p.at, p.usedPercent]);
    if (line.length) {
      line.push([data.now, line[line.length - 1][1]]);
      root.append(svg("path", { d: path(line, x, y), class: `line ${window}`, style: `stroke: ${paint(shade)}`, "stroke-dasharray": dash }));
    }
    for (const p of windows[window]) if (p.resetsAt) resets.add(`${window}:${p.resetsAt}`);
  }
  const resetTimes = [...resets].map((r) => Number(r.split(":")[1]) * 1000).filter((t) => t >= data.since && t <= to);
  for (const t of resetTimes) {
    root.append(svg("line", { x1: x(t), x2: x(t), y1: PAD.top, y2: H - PAD.bottom, class: "reset" }));
  }
  const now = status?.usage?.primary;
  let forecastWords = "";
  if (now && now.resetsAt) {
    const resetAt = now.resetsAt * 1000;
    let atReset = now.usedPercent;
    if (status.emptyAt && status.emptyAt > data.now) {
      const pace = (100 - now.usedPercent) / (status.emptyAt - data.now);
      atReset = Math.min(100, now.usedPercent + pace * (resetAt - data.now));
    }
    const end = Math.min(resetAt, to);
    const endValue = now.usedPercent + (atReset - now.usedPercent) * ((end - data.now) / Math.max(1, resetAt - data.now));
    root.append(svg("path", { d: path([[data.now, now.usedPercent], [end, endValue]], x, y), class: "forecast", style: `stroke: ${paint(shade)}` }));
    forecastWords = status.emptyAt
      ? ` At this pace the 5-hour window runs out before it resets.`
      : ` At this pace it reaches about ${Math.round(atReset)} % by its reset.`;
  }
  root.append(svg("line", { x1: x(data.now), x2: x(data.now), y1: PAD.top, y2: H - PAD.bottom, class: "now" }));
  const last = (w) => windows[w].length ? `${Math.round(windows[w][windows[w].length - 1].usedPercent)} %` : "unknown";
  const words = `${name}: 5-hour usage (solid) and weekly usage (dashed) over the last 7 days, `
    + `now ${last("primary")} and ${last("secondary")}, with ${resetTimes.length} `
    + `${resetTimes.length === 1 ? "reset" : "resets"} marked.${forecastWords}`;
  root.setAttribute("aria-label", words);
  root.querySelector("title").textContent = words;
  return figure(words, root, name);
}

/** The pool's 5-hour headroom: the sum of every account's room left, as each last reading says. */
function poolChart(points, accounts, data) {
  const latest = new Map();
  const steps = [];
  for (const p of points.filter((p) => p.window === "primary")) {
    latest.set(series(p), p.usedPercent);
    const room = [...latest.values()].reduce((sum, used) => sum + (100 - used), 0);
    steps.push([p.at, room]);
  }
  const top = Math.max(100, accounts.length * 100);
  const { root, x, y } = frame("", data.since, data.now, top, "");
  if (steps.length) {
    steps.push([data.now, steps[steps.length - 1][1]]);
    root.append(svg("path", { d: path(steps, x, y), class: "line pool" }));
  }
  const room = steps.length ? Math.round(steps[steps.length - 1][1]) : null;
  const words = room === null
    ? "The pool's 5-hour headroom over the last 7 days: nothing recorded yet."
    : `The pool's 5-hour headroom over the last 7 days, in percent of one account summed over ${latest.size} accounts: now ${room}.`;
  root.setAttribute("aria-label", words);
  root.querySelector("title").textContent = words;
  return figure(words, root, "Pool headroom (5-hour, summed)");
}

/** Tokens served per account per day, side by side; `ids` in the accounts' order, `names`
 * what each is called. */
function tokensChart(days, ids, names, data) {
  const total = (d) => d.inputTokens + d.outputTokens;
  const top = Math.max(1, ...days.map(total));
  const { root, x, y } = frame("", data.since, data.now + DAY / 2, top, "");
  const width = ((W - PAD.left - PAD.right) / 8) / Math.max(1, names.length);
  days.forEach((d) => {
    const i = ids.indexOf(series(d));
    const start = Date.parse(`${d.day}T00:00:00Z`) + DAY / 2;
    const left = x(start) - (names.length * width) / 2 + i * width;
    root.append(svg("rect", { x: left, y: y(total(d)), width: Math.max(1, width - 1), height: y(0) - y(total(d)), style: `fill: ${paint(i)}`, class: "day-bar" }));
  });
  const sums = ids.map((id, i) => `${names[i]} ${days.filter((d) => series(d) === id).reduce((s, d) => s + total(d), 0)}`);
  const words = `Tokens served per account per day over the last 7 days (input and output): ${sums.join(", ") || "none yet"}.`;
  root.setAttribute("aria-label", words);
  root.querySelector("title").textContent = words;
  return figure(words, root, "Tokens per day", names);
}

/** A chart in its card, under `heading`; with `key`, which colour is whose (accounts' order). */
function figure(words, chart, heading, key = []) {
  const node = document.createElement("figure");
  node.className = "chart-box";
  const caption = document.createElement("figcaption");
  caption.textContent = heading;
  key.forEach((name, i) => {
    const item = document.createElement("span");
    item.className = "key";
    item.style.setProperty("--key", paint(i));
    item.textContent = name;
    caption.append(item);
  });
  const said = document.createElement("p");
  said.className = "sr-only";
  said.textContent = words;
  node.append(caption, chart, said);
  return node;
}

/** Draws every chart of `data` (the `usage_history` command's answer) into `container`. */
export function renderCharts(container, data) {
  const ids = [...new Set([...data.accounts.map((a) => a.key), ...data.points.map(series), ...data.days.map(series)])];
  // What each is called: as the account list says now, else as the history last wrote it.
  const called = ids.map((id) => {
    const a = data.accounts.find((x) => x.key === id);
    if (a) return a.label ?? a.email ?? a.key;
    const day = data.days.find((d) => series(d) === id);
    if (day) return day.account;
    const points = data.points.filter((p) => series(p) === id);
    return points.length ? points[points.length - 1].account : id;
  });
  // Two accounts called alike (one email, two workspaces) are told apart by their keys.
  const names = called.map((n, i) => called.filter((m) => m === n).length > 1 ? `${n} (${ids[i]})` : n);
  const figures = ids.map((id, i) => accountChart(
    names[i],
    data.points.filter((p) => series(p) === id),
    data.accounts.find((a) => a.key === id),
    data,
    i,
  ));
  figures.push(poolChart(data.points, data.accounts, data), tokensChart(data.days, ids, names, data));
  container.replaceChildren(...figures);
}
