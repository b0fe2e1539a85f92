//! Draws the tray icon: one bar per account, its height the headroom left and its colour
//! the state, with a badge for the pool as a whole. Plain RGBA, so it is tested pixel by
//! pixel and looks the same on every OS.

use super::tray_model::{Bar, BarColour, IconState};

type Rgba = [u8; 4];

const HEALTHY: Rgba = [34, 197, 94, 255];
const LOW: Rgba = [234, 179, 8, 255];
const LIMITED: Rgba = [239, 68, 68, 255];
const NEEDS_LOGIN: Rgba = [168, 85, 247, 255];
const DISABLED: Rgba = [148, 163, 184, 255];
/// The empty part of a bar: visible on light and dark panels alike.
const TRACK: Rgba = [100, 116, 139, 110];
const CLEAR: Rgba = [0, 0, 0, 0];

fn colour(c: BarColour) -> Rgba {
    match c {
        BarColour::Healthy => HEALTHY,
        BarColour::Low => LOW,
        BarColour::Limited => LIMITED,
        BarColour::NeedsLogin => NEEDS_LOGIN,
        BarColour::Disabled => DISABLED,
    }
}

/// An RGBA image of `size`×`size` pixels, row by row.
pub struct Icon {
    pub size: u32,
    pub rgba: Vec<u8>,
}

impl Icon {
    pub fn pixel(&self, x: u32, y: u32) -> Rgba {
        let i = ((y * self.size + x) * 4) as usize;
        [
            self.rgba[i],
            self.rgba[i + 1],
            self.rgba[i + 2],
            self.rgba[i + 3],
        ]
    }

    fn fill(&mut self, x0: u32, y0: u32, x1: u32, y1: u32, c: Rgba) {
        for y in y0..y1.min(self.size) {
            for x in x0..x1.min(self.size) {
                let i = ((y * self.size + x) * 4) as usize;
                self.rgba[i..i + 4].copy_from_slice(&c);
            }
        }
    }
}

/// Renders the icon. With no bars (no account, router stopped) a single grey or red bar
/// says so.
pub fn render(bars: &[Bar], state: &IconState, size: u32) -> Icon {
    let mut icon = Icon {
        size,
        rgba: vec![0; (size * size * 4) as usize],
    };
    icon.fill(0, 0, size, size, CLEAR);
    let placeholder = match state {
        IconState::Stopped | IconState::NoAccounts => Some(Bar {
            headroom: 0.0,
            colour: BarColour::Disabled,
        }),
        IconState::PortTaken => Some(Bar {
            headroom: 1.0,
            colour: BarColour::Limited,
        }),
        _ => None,
    };
    let shown: Vec<Bar> = match placeholder {
        Some(bar) => vec![bar],
        None => bars.iter().copied().take(6).collect(),
    };
    let n = shown.len().max(1) as u32;
    // Bars fill the width with one-pixel gaps; at 16 px, up to 6 accounts stay readable.
    let gap = if size >= 24 { 2 } else { 1 };
    let width = ((size - gap * (n - 1)) / n).max(1);
    let left = (size - (width * n + gap * (n - 1))) / 2;
    let top = 1;
    let height = size - 2;
    for (i, bar) in shown.iter().enumerate() {
        let x0 = left + i as u32 * (width + gap);
        let filled = (bar.headroom.clamp(0.0, 1.0) * height as f64).round() as u32;
        // A limited account keeps a sliver so its colour still shows.
        let filled = if bar.colour == BarColour::Limited {
            filled.max(2)
        } else {
            filled
        };
        icon.fill(x0, top, x0 + width, top + height - filled, TRACK);
        icon.fill(
            x0,
            top + height - filled,
            x0 + width,
            top + height,
            colour(bar.colour),
        );
    }
    if let Some(badge) = badge(state) {
        let d = (size / 3).max(4);
        icon.fill(size - d, 0, size, d, badge);
    }
    icon
}

/// A corner badge for states that need attention.
fn badge(state: &IconState) -> Option<Rgba> {
    match state {
        IconState::NeedsLogin => Some(NEEDS_LOGIN),
        IconState::AllLimited { .. } | IconState::PortTaken => Some(LIMITED),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(headroom: f64, colour: BarColour) -> Bar {
        Bar { headroom, colour }
    }

    #[test]
    fn bars_rise_with_headroom_in_their_colour() {
        let icon = render(
            &[bar(1.0, BarColour::Healthy), bar(0.25, BarColour::Low)],
            &IconState::AllHealthy,
            16,
        );
        // The first bar is full: green at the top and bottom.
        assert_eq!(icon.pixel(2, 1), HEALTHY);
        assert_eq!(icon.pixel(2, 14), HEALTHY);
        // The second is a quarter full: track above, amber below.
        assert_eq!(icon.pixel(12, 3), TRACK);
        assert_eq!(icon.pixel(12, 14), LOW);
        assert_eq!(icon.pixel(7, 8)[3], 0, "a clear gap between bars");
    }

    #[test]
    fn states_that_need_attention_get_a_badge() {
        let login = render(
            &[bar(1.0, BarColour::NeedsLogin)],
            &IconState::NeedsLogin,
            24,
        );
        assert_eq!(login.pixel(23, 0), NEEDS_LOGIN);
        let limited = render(
            &[bar(0.0, BarColour::Limited)],
            &IconState::AllLimited { earliest_reset: 0 },
            24,
        );
        assert_eq!(limited.pixel(23, 0), LIMITED);
        assert_eq!(
            limited.pixel(10, 22),
            LIMITED,
            "a limited bar keeps a visible sliver"
        );
        let fine = render(&[bar(0.5, BarColour::Healthy)], &IconState::AllHealthy, 24);
        assert_ne!(fine.pixel(23, 0), LIMITED);
    }

    #[test]
    fn stopped_and_taken_port_draw_a_single_bar() {
        let stopped = render(&[bar(1.0, BarColour::Healthy)], &IconState::Stopped, 16);
        assert_eq!(stopped.pixel(8, 8), TRACK);
        let taken = render(&[], &IconState::PortTaken, 16);
        assert_eq!(taken.pixel(2, 14), LIMITED);
    }
}
