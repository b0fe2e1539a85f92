// Every Tauri command and event the dashboard uses, in one place.

const tauri = () => window.__TAURI__;
const internals = () => window.__TAURI_INTERNALS__;

/**
 * Calls one of the app's Tauri commands (the names below). The window's process hands it to
 * the tray app, which runs it. Errors come back as {code, message}.
 */
export function invoke(name, args = {}) {
  const core = tauri()?.core ?? internals();
  return core.invoke(name, args);
}

export const commands = {
  status: () => invoke("dashboard_status"),
  addAccount: () => invoke("add_account"),
  relogin: (key) => invoke("relogin", { key }),
  setEnabled: (key, enabled) => invoke("set_account_enabled", { key, enabled }),
  useForNewSessions: (key) => invoke("use_for_new_sessions", { key }),
  remove: (key) => invoke("remove_account", { key }),
  setStrategy: (strategy) => invoke("set_strategy", { strategy }),
  applyCodexConfig: () => invoke("apply_codex_config"),
  revertCodexConfig: () => invoke("revert_codex_config"),
  settings: () => invoke("settings"),
  setSetting: (key, value) => invoke("set_setting", { key, value }),
  unsetSetting: (key) => invoke("unset_setting", { key }),
  setStartAtLogin: (enabled) => invoke("set_start_at_login", { enabled }),
  usageHistory: () => invoke("usage_history"),
};

/** Opens a web page in the system browser (tauri-plugin-opener), never inside this window. */
export function openInBrowser(url) {
  const core = tauri()?.core ?? internals();
  return core.invoke("plugin:opener|open_url", { url });
}

export const STATUS_CHANGED = "status-changed";

/** Calls `handler` on every status change; a no-op where events are unavailable (tests). */
export function onStatusChanged(handler) {
  const events = tauri()?.event;
  if (events) events.listen(STATUS_CHANGED, handler);
}
