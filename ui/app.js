// The dashboard: accounts with usage, resets and pace, the router, the last requests.

import { commands, onStatusChanged, openInBrowser } from "./api.js";
import { renderCharts } from "./charts.js";

const $ = (selector) => document.querySelector(selector);

/** The account whose removal waits for its confirming click; kept across redraws. */
let pendingRemove = null;

/** Messages by error code: the page never shows a raw Rust message alone. */
const ERROR_TEXT = {
  login: "The sign-in did not complete",
  failed: "That did not work",
  store: "The accounts file could not be used",
  port: "The router's port is taken",
  strategy: "Unknown strategy",
  setting: "That setting was not saved",
  autostart: "Start at login could not be changed",
  internal: "Something went wrong",
};

function showError(error) {
  const box = $("#error");
  const code = error?.code ?? "internal";
  box.dataset.code = code;
  box.textContent = `${ERROR_TEXT[code] ?? ERROR_TEXT.internal}: ${error?.message ?? error}`;
  box.hidden = false;
}

async function act(promise) {
  try {
    await promise;
    $("#error").hidden = true;
  } catch (error) {
    showError(error);
  }
  await refresh();
}

export function countdown(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function usageRow(account, window, label, now) {
  const w = account.usage?.[window];
  const used = typeof w?.usedPercent === "number" ? w.usedPercent : null;
  const fill = el("span");
  fill.style.width = `${used === null ? 0 : Math.min(100, used)}%`;
  if (used !== null && used >= 100) fill.className = "full";
  else if (used !== null && used >= 80) fill.className = "low";
  const reset = w?.resetsAt ? `resets in ${countdown(w.resetsAt * 1000 - now)}` : "";
  return el("div", { class: `usage usage-${window}` },
    el("span", { text: label }),
    el("div", { class: "bar" }, fill),
    el("span", { class: "percent", text: used === null ? "-" : `${Math.round(used)}%` }),
    el("span", { class: `reset-${window}`, text: reset }));
}

function accountCard(a, now) {
  const name = a.label ?? a.email ?? a.key;
  const state = a.enabled ? a.state : "disabled";
  const stateText = state === "limited" && a.until ? `limited ${countdown(a.until - now)}` : a.attention ?? state;
  const forecast = a.emptyAt ? `at this rate, empty in ~${countdown(a.emptyAt - now)}` : "";
  const button = (action, text) => el("button", { type: "button", dataset: { action }, text });
  const actions = el("div", { class: "actions" },
    button("use", a.preferred ? "Used for new sessions" : "Use for new sessions"),
    button("toggle", a.enabled ? "Disable" : "Enable"),
    button("relogin", "Log in again…"),
    a.key === pendingRemove ? button("confirm-remove", `Remove ${name} from this machine`) : button("remove", "Remove…"));
  const card = el("div", { class: "account", dataset: { key: a.key } },
    el("div", { class: "top" },
      el("span", { class: "email", text: name }),
      el("span", { class: "plan", text: a.plan ?? "" }),
      el("span", { class: "state", dataset: { state }, text: state }),
      el("span", { class: "forecast", text: forecast })),
    usageRow(a, "primary", "5 h", now),
    usageRow(a, "secondary", "week", now),
    actions);
  card.querySelector(".state").title = stateText;
  actions.addEventListener("click", (event) => {
    const action = event.target?.dataset?.action;
    if (action === "use") act(commands.useForNewSessions(a.key));
    if (action === "toggle") act(commands.setEnabled(a.key, !a.enabled));
    if (action === "relogin") act(commands.relogin(a.key));
    if (action === "confirm-remove") {
      pendingRemove = null;
      act(commands.remove(a.key));
    }
    if (action === "remove") {
      pendingRemove = a.key;
      event.target.replaceWith(button("confirm-remove", `Remove ${name} from this machine`));
    }
  });
  return card;
}

function render(status) {
  const now = status.now;
  const router = status.router;
  $("#router-state").textContent = {
    running: "running", attached: "running (another instance)", stopped: "stopped", "port-taken": `port ${router.port} taken`,
  }[router.state] ?? router.state;
  $("#router-address").textContent = router.base_url ?? router.baseUrl ?? "-";
  const list = $("#accounts");
  list.replaceChildren(...status.accounts.map((a) => accountCard(a, now)));
  if (status.accounts.length === 0) list.append(el("p", { text: "No account yet: add one." }));
  $("#strategy").value = status.strategy;
  $("#notice").hidden = !status.notice;
  $("#notice").textContent = status.notice ?? "";
  $("#codex-config").textContent = status.codexConfigured ? `points at the router (${status.codexConfig})` : `not pointing at the router (${status.codexConfig})`;
  $("#recent tbody").replaceChildren(...status.recent.map((r) => el("tr", { class: "request" },
    el("td", { text: new Date(r.at).toLocaleTimeString() }),
    el("td", { text: r.account ?? "-" }),
    el("td", { text: r.model }),
    el("td", { text: String(r.status) }),
    el("td", { text: `${r.firstByteMs.toFixed(1)} ms` }))));
}

/** The settings the dashboard offers; the rest are in `cma settings` and the file. */
const SHOWN_SETTINGS = ["port", "token_store", "first_byte_timeout_ms", "stream_idle_timeout_ms", "binding_ttl_secs", "alert_thresholds"];
const LABELS = {
  port: "Router port", token_store: "Token store", first_byte_timeout_ms: "First byte timeout (ms)",
  stream_idle_timeout_ms: "Stream idle timeout (ms)", binding_ttl_secs: "Session binding idle time (s)",
  alert_thresholds: "Alert at (% used)",
};
/** Settings written as a list ("80,95" or "off"), not one number. */
const LIST_SETTINGS = new Set(["alert_thresholds"]);
/** A field the user is typing in is not redrawn under their fingers. */
let editing = null;

function settingNote(s) {
  if (s.source === "env") return `set by ${s.variable}, which wins over the file`;
  if (s.restartNeeded) return "saved: takes effect when the app restarts";
  return s.source === "file" ? "from the file" : `default (${s.allowed})`;
}

function settingRow(s) {
  const id = `setting-${s.key}`;
  const input = s.choices.length > 0
    ? el("select", { id, name: s.key }, ...s.choices.map((c) => el("option", { value: c, text: c })))
    : el("input", { id, name: s.key, type: "text", inputmode: LIST_SETTINGS.has(s.key) ? "text" : "numeric", "aria-describedby": `${id}-note` });
  input.value = s.value;
  input.title = s.help;
  const note = el("span", { id: `${id}-note`, class: s.restartNeeded ? "note restart" : "note", text: settingNote(s) });
  const row = el("label", { class: "setting", for: id, dataset: { key: s.key } },
    el("span", { class: "name", text: LABELS[s.key] ?? s.key }), input, note);
  input.addEventListener("focus", () => { editing = s.key; });
  input.addEventListener("blur", () => { if (editing === s.key) editing = null; });
  input.addEventListener("change", () => saveSetting(row, s.key, input.value));
  return row;
}

async function saveSetting(row, key, value) {
  const message = $("#settings-message");
  try {
    // An emptied field gives the setting back to the environment or the default.
    const outcome = value.trim() === "" ? await commands.unsetSetting(key) : await commands.setSetting(key, value);
    delete row.dataset.refused;
    message.textContent = outcome.message;
    message.hidden = false;
    $("#error").hidden = true;
  } catch (error) {
    row.dataset.refused = "true";
    showError(error);
  }
  if (editing === key) editing = null;
  await refreshSettings();
}

function renderSettings(view) {
  $("#settings-file").textContent = view.file;
  const problems = $("#settings-problems");
  problems.textContent = view.problems.map((p) => p.message).join(" ");
  problems.hidden = view.problems.length === 0;
  $("#start-at-login").checked = view.startAtLogin;
  const form = $("#settings-form");
  for (const key of SHOWN_SETTINGS) {
    const s = view.settings.find((x) => x.key === key);
    if (!s || editing === key) continue;
    const old = form.querySelector(`[data-key="${key}"]`);
    const row = settingRow(s);
    if (old?.dataset.refused) row.dataset.refused = "true";
    if (old) old.replaceWith(row); else form.append(row);
  }
}

async function refreshSettings() {
  try {
    renderSettings(await commands.settings());
  } catch (error) {
    showError(error);
  }
}

async function refreshCharts() {
  try {
    renderCharts($("#charts"), await commands.usageHistory());
  } catch (error) {
    showError(error);
  }
}

async function refresh() {
  try {
    render(await commands.status());
  } catch (error) {
    showError(error);
  }
  await refreshSettings();
  await refreshCharts();
}

$("#add-account").addEventListener("click", () => act(commands.addAccount()));
$("#strategy").addEventListener("change", (e) => act(commands.setStrategy(e.target.value)));
$("#codex-apply").addEventListener("click", () => act(commands.applyCodexConfig()));
$("#codex-revert").addEventListener("click", () => act(commands.revertCodexConfig()));
$("#start-at-login").addEventListener("change", (e) => act(commands.setStartAtLogin(e.target.checked)));
// Web links open in the system browser; the window only ever shows the dashboard.
document.addEventListener("click", (event) => {
  const link = event.target?.closest?.("a[href^='https://']");
  if (!link) return;
  event.preventDefault();
  act(openInBrowser(link.href));
});
onStatusChanged(refresh);
setInterval(refresh, 5000);
refresh();
