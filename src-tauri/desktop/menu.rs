//! The tray menu as Tauri menu items, kept in step with `tray_model::menu`: while the items stay
//! the same (same ids, same kinds, same order) their texts, checks and enabled states are
//! changed in place, so a menu the user has open stays open and shows the news; it is rebuilt
//! only when items come or go (an account added or removed, a notice shown). Replacing the
//! menu would close an open one on macOS, and on Windows the click would land on a destroyed
//! menu.

use std::collections::HashMap;

use tauri::menu::{CheckMenuItem, IsMenuItem, Menu, MenuItem, Submenu};
use tauri::{AppHandle, Wry};

use super::tray_model::MenuEntry;

/// What one entry is, apart from its texts and states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    Check,
    Submenu,
}

/// One entry of the menu, flattened in order (a submenu's children follow it).
#[derive(Clone, Debug, PartialEq)]
struct Line {
    id: String,
    depth: usize,
    kind: Kind,
    label: String,
    enabled: bool,
    checked: bool,
}

fn lines(entries: &[MenuEntry]) -> Vec<Line> {
    fn walk(entries: &[MenuEntry], depth: usize, out: &mut Vec<Line>) {
        for e in entries {
            let kind = match (e.children.is_empty(), e.checked) {
                (false, _) => Kind::Submenu,
                (true, Some(_)) => Kind::Check,
                (true, None) => Kind::Plain,
            };
            out.push(Line {
                id: e.id.id(),
                depth,
                kind,
                label: e.label.clone(),
                enabled: e.enabled,
                checked: e.checked.unwrap_or(false),
            });
            walk(&e.children, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(entries, 0, &mut out);
    out
}

/// A change to one item made in place.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Change {
    pub id: String,
    pub text: Option<String>,
    pub enabled: Option<bool>,
    pub checked: Option<bool>,
}

/// How to get from the menu shown to the one wanted.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// The same items: these changes, in place (none when nothing changed).
    InPlace(Vec<Change>),
    /// Items came, went or moved: a new menu.
    Rebuild,
}

pub fn plan(shown: &[MenuEntry], wanted: &[MenuEntry]) -> Plan {
    let (shown, wanted) = (lines(shown), lines(wanted));
    let same_items = shown.len() == wanted.len()
        && shown
            .iter()
            .zip(&wanted)
            .all(|(a, b)| (&a.id, a.depth, a.kind) == (&b.id, b.depth, b.kind));
    if !same_items {
        return Plan::Rebuild;
    }
    let changes = shown
        .iter()
        .zip(&wanted)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| Change {
            id: b.id.clone(),
            text: (a.label != b.label).then(|| b.label.clone()),
            enabled: (a.enabled != b.enabled).then_some(b.enabled),
            checked: (a.checked != b.checked).then_some(b.checked),
        })
        .collect();
    Plan::InPlace(changes)
}

/// An item of the built menu, by kind.
enum Item {
    Plain(MenuItem<Wry>),
    Check(CheckMenuItem<Wry>),
    Submenu(Submenu<Wry>),
}

/// The menu the tray shows, with its items by id and the entries it was built from.
pub struct TrayMenu {
    menu: Menu<Wry>,
    items: HashMap<String, Item>,
    shown: Vec<MenuEntry>,
}

impl TrayMenu {
    pub fn build(app: &AppHandle, entries: &[MenuEntry]) -> tauri::Result<TrayMenu> {
        let menu = Menu::new(app)?;
        let mut items = HashMap::new();
        for entry in entries {
            let item = build_item(app, entry, &mut items)?;
            menu.append(item.as_ref())?;
        }
        Ok(TrayMenu {
            menu,
            items,
            shown: entries.to_vec(),
        })
    }

    pub fn menu(&self) -> Menu<Wry> {
        self.menu.clone()
    }

    /// Brings the menu in line with `entries` in place; `false` when it must be rebuilt.
    pub fn update(&mut self, app: &AppHandle, entries: &[MenuEntry]) -> bool {
        let Plan::InPlace(changes) = plan(&self.shown, entries) else {
            return false;
        };
        for change in changes {
            let Some(item) = self.items.get(&change.id) else {
                return false;
            };
            let done = match (item, &change.text) {
                // GTK cannot retitle a submenu (muda 0.20 sets the label of an item whose
                // child is a box, which does nothing): the row is swapped for a new one.
                (Item::Submenu(_), Some(_)) if cfg!(target_os = "linux") => {
                    self.swap(app, entries, &change.id)
                }
                (item, _) => apply(item, &change).map(|()| true),
            };
            if !matches!(done, Ok(true)) {
                return false;
            }
        }
        // A click flips a check item by itself (muda does, on every system) even when the
        // model stays the same, as when the strategy already in use is chosen again: every
        // check is put back to what the model says.
        for line in lines(entries).iter().filter(|l| l.kind == Kind::Check) {
            if let Some(Item::Check(item)) = self.items.get(&line.id) {
                if item.is_checked().is_ok_and(|shown| shown != line.checked)
                    && item.set_checked(line.checked).is_err()
                {
                    return false;
                }
            }
        }
        self.shown = entries.to_vec();
        true
    }

    /// Replaces the top-level submenu `id` by one built from `entries`, at the same place;
    /// `false` when it is not a top-level row (then the whole menu is rebuilt).
    fn swap(&mut self, app: &AppHandle, entries: &[MenuEntry], id: &str) -> tauri::Result<bool> {
        let place = entries.iter().position(|e| e.id.id() == id);
        let (Some(place), Some(Item::Submenu(old))) = (place, self.items.get(id)) else {
            return Ok(false);
        };
        let old = old.clone();
        let new = build_item(app, &entries[place], &mut self.items)?;
        self.menu.remove(&old)?;
        self.menu.insert(new.as_ref(), place)?;
        Ok(true)
    }
}

fn apply(item: &Item, change: &Change) -> tauri::Result<()> {
    if let Some(text) = &change.text {
        match item {
            Item::Plain(i) => i.set_text(text)?,
            Item::Check(i) => i.set_text(text)?,
            Item::Submenu(i) => i.set_text(text)?,
        }
    }
    if let Some(enabled) = change.enabled {
        match item {
            Item::Plain(i) => i.set_enabled(enabled)?,
            Item::Check(i) => i.set_enabled(enabled)?,
            Item::Submenu(i) => i.set_enabled(enabled)?,
        }
    }
    if let (Some(checked), Item::Check(i)) = (change.checked, item) {
        i.set_checked(checked)?;
    }
    Ok(())
}

/// Builds `entry` (and its children), records every item by id, and returns it for appending.
fn build_item(
    app: &AppHandle,
    entry: &MenuEntry,
    items: &mut HashMap<String, Item>,
) -> tauri::Result<Box<dyn IsMenuItem<Wry>>> {
    let id = entry.id.id();
    let built: Box<dyn IsMenuItem<Wry>> = if !entry.children.is_empty() {
        let sub = Submenu::with_id(app, &id, &entry.label, entry.enabled)?;
        for child in &entry.children {
            let item = build_item(app, child, items)?;
            sub.append(item.as_ref())?;
        }
        items.insert(id, Item::Submenu(sub.clone()));
        Box::new(sub)
    } else if let Some(checked) = entry.checked {
        let check =
            CheckMenuItem::with_id(app, &id, &entry.label, entry.enabled, checked, None::<&str>)?;
        items.insert(id, Item::Check(check.clone()));
        Box::new(check)
    } else {
        let plain = MenuItem::with_id(app, &id, &entry.label, entry.enabled, None::<&str>)?;
        items.insert(id, Item::Plain(plain.clone()));
        Box::new(plain)
    };
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desktop::tray_model::MenuId;

    fn entry(id: MenuId, label: &str) -> MenuEntry {
        MenuEntry {
            id,
            label: label.to_string(),
            enabled: true,
            checked: None,
            children: Vec::new(),
        }
    }

    fn account(key: &str, line: &str, preferred: bool) -> MenuEntry {
        let mut a = entry(MenuId::Info(key.to_string()), line);
        a.children = vec![MenuEntry {
            checked: Some(preferred),
            ..entry(
                MenuId::UseForNewSessions(key.to_string()),
                "Use for new sessions",
            )
        }];
        a
    }

    #[test]
    fn new_usage_and_a_new_check_are_changed_in_place() {
        let shown = [
            account("a", "a — 5h 10%", true),
            account("b", "b — 5h 0%", false),
        ];
        let wanted = [
            account("a", "a — limited", false),
            account("b", "b — 5h 0%", true),
        ];
        let Plan::InPlace(changes) = plan(&shown, &wanted) else {
            panic!("same items: no new menu");
        };
        assert_eq!(
            changes,
            [
                Change {
                    id: "info:a".into(),
                    text: Some("a — limited".into()),
                    ..Change::default()
                },
                Change {
                    id: "use:a".into(),
                    checked: Some(false),
                    ..Change::default()
                },
                Change {
                    id: "use:b".into(),
                    checked: Some(true),
                    ..Change::default()
                },
            ]
        );
        assert_eq!(plan(&wanted, &wanted), Plan::InPlace(Vec::new()));
    }

    #[test]
    fn an_account_added_or_removed_rebuilds_the_menu() {
        let one = [account("a", "a", false)];
        let two = [account("a", "a", false), account("b", "b", false)];
        assert_eq!(plan(&one, &two), Plan::Rebuild);
        assert_eq!(plan(&two, &one), Plan::Rebuild);
        // The same count but another account is another item too.
        assert_eq!(plan(&one, &[account("c", "a", false)]), Plan::Rebuild);
    }
}
