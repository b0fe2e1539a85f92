//! The app icons `scripts/icons` makes from `icons/source.svg`: every file `tauri.conf.json`
//! lists is there, each PNG is RGBA at the size its name says (tauri-build refuses other
//! PNGs), and `icon.ico` and `icon.icns` hold the sizes Windows and macOS ask for. Also the
//! macOS `Info.plist` addition that makes the tray app an agent.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn listed_icons() -> Vec<PathBuf> {
    let text = std::fs::read_to_string(root().join("tauri.conf.json")).expect("tauri.conf.json");
    let config: Value = serde_json::from_str(&text).expect("tauri.conf.json is JSON");
    let icons = config["bundle"]["icon"].as_array().expect("bundle.icon");
    icons
        .iter()
        .map(|i| root().join(i.as_str().expect("an icon path")))
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn le16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("two bytes"))
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

/// Width and height of a PNG, after checking it is 8-bit RGBA.
#[track_caller]
fn png_rgba_size(bytes: &[u8], what: &str) -> (u32, u32) {
    assert!(
        bytes.len() > 33 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "{what} is not a PNG"
    );
    let (bit_depth, colour_type) = (bytes[24], bytes[25]);
    assert_eq!(
        (bit_depth, colour_type),
        (8, 6),
        "{what} is not 8-bit RGBA (bit depth {bit_depth}, colour type {colour_type})"
    );
    (be32(bytes, 16), be32(bytes, 20))
}

/// The side a PNG's name promises: `32x32.png`, `128x128@2x.png`, `Square44x44Logo.png`,
/// `StoreLogo.png`; `None` for `icon.png`, whose name says no size.
fn promised_side(name: &str) -> Option<u32> {
    if name == "StoreLogo.png" {
        return Some(50);
    }
    let stem = name.strip_suffix(".png")?;
    let (stem, scale) = match stem.strip_suffix("@2x") {
        Some(stem) => (stem, 2),
        None => (stem, 1),
    };
    let stem = stem.strip_prefix("Square").unwrap_or(stem);
    let stem = stem.strip_suffix("Logo").unwrap_or(stem);
    let (width, height) = stem.split_once('x')?;
    let (width, height): (u32, u32) = (width.parse().ok()?, height.parse().ok()?);
    assert_eq!(width, height, "{name} names a non-square size");
    Some(width * scale)
}

#[test]
fn every_icon_in_the_config_exists_with_the_formats_each_system_needs() {
    let icons = listed_icons();
    for icon in &icons {
        assert!(
            icon.is_file(),
            "tauri.conf.json lists {}, which is missing",
            icon.display()
        );
    }
    let named = |name: &str| icons.iter().any(|i| i.file_name().unwrap() == name);
    // tauri-build on Windows stops without an .ico; the macOS bundle takes the .icns; the
    // Linux bundles take the PNGs, up to icon.png.
    for needed in [
        "icon.ico",
        "icon.icns",
        "32x32.png",
        "128x128.png",
        "128x128@2x.png",
    ] {
        assert!(named(needed), "bundle.icon does not list icons/{needed}");
    }
    assert!(
        root().join("icons/source.svg").is_file(),
        "the source image is missing"
    );
}

#[test]
fn every_png_icon_is_rgba_at_the_size_its_name_says() {
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(root().join("icons"))
        .expect("icons/")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    assert!(pngs.len() >= 4, "only {pngs:?} in icons/");
    for png in &pngs {
        let name = png.file_name().unwrap().to_string_lossy().to_string();
        let (width, height) = png_rgba_size(&read(png), &name);
        match promised_side(&name) {
            Some(side) => assert_eq!((width, height), (side, side), "{name}"),
            None => assert!(
                width == height && width >= 512,
                "{name} is {width}x{height}"
            ),
        }
    }
}

#[test]
fn the_windows_icon_holds_every_size_from_16_to_256() {
    let ico = read(&root().join("icons/icon.ico"));
    assert_eq!((le16(&ico, 0), le16(&ico, 2)), (0, 1), "not an .ico header");
    let count = usize::from(le16(&ico, 4));
    let mut sides = Vec::new();
    for entry in (0..count).map(|i| &ico[6 + 16 * i..22 + 16 * i]) {
        // 0 in the directory means 256.
        let side = if entry[0] == 0 {
            256
        } else {
            u32::from(entry[0])
        };
        let (size, offset) = (le32(entry, 8) as usize, le32(entry, 12) as usize);
        let image = ico
            .get(offset..offset + size)
            .unwrap_or_else(|| panic!("the {side} px image runs past the end of icon.ico"));
        if image.starts_with(b"\x89PNG") {
            let what = format!("the {side} px image in icon.ico");
            assert_eq!(png_rgba_size(image, &what), (side, side), "{what}");
        } else {
            assert_eq!(
                le32(image, 0),
                40,
                "the {side} px image is neither PNG nor BMP"
            );
        }
        sides.push(side);
    }
    for wanted in [16, 24, 32, 48, 64, 256] {
        assert!(
            sides.contains(&wanted),
            "icon.ico has {sides:?}, not {wanted}"
        );
    }
}

#[test]
fn the_macos_icon_holds_every_size_from_32_to_1024() {
    let icns = read(&root().join("icons/icon.icns"));
    assert!(
        icns.starts_with(b"icns"),
        "icon.icns does not start with `icns`"
    );
    assert_eq!(
        be32(&icns, 4) as usize,
        icns.len(),
        "icon.icns's length field"
    );
    // The PNG-carrying types and their pixel sides (Apple's `icns` types).
    let expected = [
        (b"ic07", 128),
        (b"ic08", 256),
        (b"ic09", 512),
        (b"ic10", 1024),
        (b"ic11", 32),
        (b"ic12", 64),
        (b"ic13", 256),
        (b"ic14", 512),
    ];
    let mut found = Vec::new();
    let mut at = 8;
    while at < icns.len() {
        let (kind, length) = (&icns[at..at + 4], be32(&icns, at + 4) as usize);
        assert!(
            length >= 8 && at + length <= icns.len(),
            "a broken chunk at {at}"
        );
        if let Some((name, side)) = expected.iter().find(|(k, _)| k.as_slice() == kind) {
            let what = format!("{} in icon.icns", String::from_utf8_lossy(*name));
            let size = png_rgba_size(&icns[at + 8..at + length], &what);
            assert_eq!(size, (*side, *side), "{what}");
            found.push(*side);
        }
        at += length;
    }
    for wanted in [32, 64, 128, 256, 512, 1024] {
        assert!(
            found.contains(&wanted),
            "icon.icns has {found:?}, not {wanted}"
        );
    }
}

#[test]
fn the_macos_app_is_an_agent_without_a_dock_icon() {
    let plist = std::fs::read_to_string(root().join("Info.plist")).expect("Info.plist");
    let compact: String = plist.split_whitespace().collect();
    assert!(
        compact.contains("<key>LSUIElement</key><true/>"),
        "Info.plist does not set LSUIElement to true:\n{plist}"
    );
}
