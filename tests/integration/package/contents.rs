//! What the .deb and the .rpm hold and declare, read from the files.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use super::*;

/// The package's files, unpacked into a temp folder.
fn unpack_deb(deb: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let to = dir.path().display().to_string();
    stdout("dpkg-deb", &["-x", &deb.display().to_string(), &to]);
    dir
}

/// Package names of a Depends line, without versions or alternatives' separators.
fn names(depends: &str) -> Vec<String> {
    let items = depends.split([',', '|']);
    let first_word = |d: &str| d.split_whitespace().next().unwrap_or("").to_string();
    items.map(first_word).filter(|n| !n.is_empty()).collect()
}

#[test]
fn package_the_deb_and_rpm_hold_all_three_programs_and_declare_every_library_they_use() {
    let Some(packages) = packages() else {
        return;
    };
    let deb = packages.deb.display().to_string();
    let files = unpack_deb(&packages.deb);
    for program in PROGRAMS {
        let path = files.path().join("usr/bin").join(program);
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode());
        let mode = mode.unwrap_or_else(|_| panic!("/usr/bin/{program} is in the .deb"));
        assert_eq!(mode & 0o755, 0o755, "/usr/bin/{program} is executable");
    }

    // The launcher entry: found by name, in Development, with an icon that exists.
    let entry = std::fs::read_to_string(files.path().join(DESKTOP_ENTRY));
    let entry = entry.expect("the .deb has a desktop entry");
    assert_eq!(field(&entry, "Name"), "Codex App Account Router");
    assert_eq!(field(&entry, "Exec"), "codex-app-account-router", "{entry}");
    assert!(
        field(&entry, "Categories").contains("Development"),
        "{entry}"
    );
    let icon = field(&entry, "Icon");
    let icon_file = files
        .path()
        .join(format!("usr/share/icons/hicolor/128x128/apps/{icon}.png"));
    assert!(
        icon_file.is_file(),
        "the entry's icon {icon} is in the package"
    );

    // Version and dependencies: every library the programs link comes from a declared package
    // (dpkg-shlibdeps reads them off the binaries), and the tray library the app opens at run
    // time is declared too.
    let control = stdout("dpkg-deb", &["-f", &deb, "Package", "Version", "Depends"]);
    assert!(
        control.contains(&format!("Package: {PACKAGE}\n")),
        "{control}"
    );
    assert!(
        control.contains(&format!("Version: {VERSION}\n")),
        "{control}"
    );
    let depends = control.lines().find_map(|l| l.strip_prefix("Depends: "));
    let declared = names(depends.unwrap_or(""));
    let shlibs = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(shlibs.path().join("debian")).expect("debian dir");
    let source = "Source: x\n\nPackage: x\nArchitecture: any\n";
    std::fs::write(shlibs.path().join("debian/control"), source).expect("control");
    let binaries: Vec<String> = PROGRAMS
        .iter()
        .map(|p| files.path().join("usr/bin").join(p).display().to_string())
        .collect();
    let shlibdeps = Command::new("dpkg-shlibdeps")
        .arg("-O")
        .args(&binaries)
        .current_dir(shlibs.path())
        .output()
        .expect("dpkg-shlibdeps runs");
    let needed = String::from_utf8_lossy(&shlibdeps.stdout).into_owned();
    assert!(shlibdeps.status.success(), "dpkg-shlibdeps: {needed}");
    let needed = names(needed.trim().trim_start_matches("shlibs:Depends="));
    assert!(
        needed.len() >= 5,
        "dpkg-shlibdeps found the libraries: {needed:?}"
    );
    for package in needed
        .iter()
        .map(String::as_str)
        .chain(["libayatana-appindicator3-1"])
    {
        assert!(
            declared.iter().any(|d| d == package),
            "{package} is used but not in Depends: {declared:?}"
        );
    }

    // lintian: nothing but the tags the package's own overrides file explains.
    let lint = output("lintian", &["--tag-display-limit", "0", &deb]);
    let said = String::from_utf8_lossy(&lint.stdout);
    let findings: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(findings.is_empty(), "lintian: {findings:#?}");

    // The .rpm: same programs and version, and every shared library of each program required
    // by its soname, which any RPM distribution resolves to its own package.
    let rpm = packages.rpm.display().to_string();
    let listed = stdout("rpm", &["-qpl", &rpm]);
    for program in PROGRAMS {
        assert!(
            listed.lines().any(|l| l == format!("/usr/bin/{program}")),
            "{listed}"
        );
    }
    assert!(
        listed.lines().any(|l| l == format!("/{DESKTOP_ENTRY}")),
        "{listed}"
    );
    let version = stdout("rpm", &["-qp", "--queryformat", "%{VERSION}", &rpm]);
    assert_eq!(version, VERSION);
    let requires = stdout("rpm", &["-qpR", &rpm]);
    for binary in &binaries {
        let dynamic = stdout("readelf", &["-d", binary]);
        for soname in dynamic
            .lines()
            .filter_map(|l| l.split_once("Shared library: ["))
        {
            let soname = soname.1.trim_end_matches(']');
            if soname.starts_with("ld-linux") {
                continue;
            }
            let wanted = format!("{soname}()(64bit)");
            assert!(
                requires.lines().any(|r| r.trim() == wanted),
                "{binary} links {soname}, which the .rpm does not require: {requires}"
            );
        }
    }
}
