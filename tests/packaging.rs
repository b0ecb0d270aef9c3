//! The Linux desktop integration files agree with each other and with the app.

use std::process::Command;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn desktop_entry_mime_type_and_metainfo_agree() {
    let desktop = read("packaging/linux/kvlab.desktop");
    assert!(
        desktop
            .lines()
            .any(|l| l == "Categories=Science;Development;")
    );
    assert!(
        desktop.lines().any(|l| l == "Exec=kvlab %f"),
        "sessions open in the app"
    );
    assert!(
        desktop
            .lines()
            .any(|l| l == "MimeType=application/x-kvlab-session;")
    );
    let mime = read("packaging/linux/kvlab-mime.xml");
    assert!(mime.contains("type=\"application/x-kvlab-session\""));
    assert!(mime.contains(&format!(
        "<glob pattern=\"*.{}\"/>",
        kvlab::session::EXTENSION
    )));
    let meta = read("packaging/linux/org.kvlab.kvlab.metainfo.xml");
    assert!(meta.contains("<launchable type=\"desktop-id\">kvlab.desktop</launchable>"));
    assert!(meta.contains("<mediatype>application/x-kvlab-session</mediatype>"));
    assert!(meta.contains("<binary>kvlab</binary>"));
}

/// The icons make-icons.sh renders from assets/kvlab.svg, rendered once per test run.
fn rendered_icons() -> &'static std::path::Path {
    static ICONS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    ICONS.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("icons");
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new("bash")
            .arg(format!(
                "{}/packaging/linux/make-icons.sh",
                env!("CARGO_MANIFEST_DIR")
            ))
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

#[test]
fn icons_render_in_every_hicolor_size() {
    let dir = rendered_icons();
    for size in [16, 24, 32, 48, 64, 128, 256, 512] {
        let png = dir.join(format!("hicolor/{size}x{size}/apps/kvlab.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|_| panic!("{} missing", png.display()));
        assert_eq!(&bytes[1..4], b"PNG");
        // The PNG header's width and height.
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (size, size));
    }
}

/// The `[package.metadata.deb]` assets of Cargo.toml, as (source, destination) pairs.
fn deb_assets() -> Vec<(String, String)> {
    let manifest = read("Cargo.toml");
    let section = manifest
        .split("\n[package.metadata.deb]\n")
        .nth(1)
        .expect("Cargo.toml has a [package.metadata.deb] section");
    let section = section.split("\n[").next().unwrap();
    let assets = section
        .split("\nassets = [\n")
        .nth(1)
        .expect("[package.metadata.deb] lists assets");
    let assets = &assets[..assets.find("\n]").expect("the assets list ends")];
    assets
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .map(|l| {
            // ["source", "destination", "mode"],
            let fields: Vec<&str> = l.split('"').skip(1).step_by(2).collect();
            assert_eq!(
                fields.len(),
                3,
                "an asset is [source, destination, mode]: {l}"
            );
            (fields[0].to_owned(), fields[1].to_owned())
        })
        .collect()
}

#[test]
fn every_deb_asset_is_in_the_repo_or_made_by_package_sh() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let package_sh = read("packaging/package.sh");
    // package.sh renders the icons into target/package/icons and builds target/release/kvlab
    // (or, with PACKAGE_PROFILE, that profile's binary, which cargo deb --profile packages in its
    // place).
    assert!(package_sh.contains("out=\"target/package\""));
    assert!(package_sh.contains("make-icons.sh \"$out/icons\""));
    assert!(package_sh.contains("build --release \"$@\""));
    assert!(package_sh.contains("deb --no-build --profile \"$profile\""));
    let icons = rendered_icons();

    let assets = deb_assets();
    let mut installed = Vec::new();
    for (source, dest) in &assets {
        if let Some(bin) = source.strip_prefix("target/release/") {
            assert_eq!(bin, "kvlab", "the only built product is the kvlab binary");
            assert!(root.join("src/main.rs").exists());
        } else if let Some(icon) = source.strip_prefix("target/package/icons/") {
            assert!(
                icons.join(icon).is_file(),
                "{source} is not among the icons make-icons.sh renders"
            );
        } else if source == "target/package/copyright" {
            assert!(package_sh.contains("} >\"$out/copyright\""));
            assert!(root.join("LICENSE").is_file());
        } else {
            assert!(
                !source.starts_with("target/"),
                "{source}: nothing else is built"
            );
            assert!(
                root.join(source).is_file(),
                "{source} is missing from the repository"
            );
        }
        // Destinations ending in / keep the source's file name.
        let name = source.rsplit('/').next().unwrap();
        let dest = if dest.ends_with('/') {
            format!("{dest}{name}")
        } else {
            dest.clone()
        };
        assert!(
            !dest.starts_with('/'),
            "{dest}: cargo-deb destinations are relative"
        );
        installed.push(dest);
    }
    let mut expected = vec![
        "usr/bin/kvlab".to_owned(),
        "usr/share/applications/kvlab.desktop".to_owned(),
        "usr/share/metainfo/org.kvlab.kvlab.metainfo.xml".to_owned(),
        "usr/share/mime/packages/kvlab.xml".to_owned(),
        "usr/share/icons/hicolor/scalable/apps/kvlab.svg".to_owned(),
        "usr/share/doc/kvlab/README.md".to_owned(),
        "usr/share/doc/kvlab/copyright".to_owned(),
    ];
    for size in [16, 24, 32, 48, 64, 128, 256, 512] {
        expected.push(format!(
            "usr/share/icons/hicolor/{size}x{size}/apps/kvlab.png"
        ));
    }
    installed.sort();
    expected.sort();
    assert_eq!(installed, expected);
    // The check script looks for the same files.
    let check = read("packaging/check-deb.sh");
    for path in expected
        .iter()
        .filter(|p| !p.contains("/icons/hicolor/") || p.ends_with(".svg"))
    {
        assert!(
            check.contains(path.as_str()),
            "check-deb.sh does not check {path}"
        );
    }
}

/// Whether `text` names `version` as a version of its own (not as part of a longer one).
fn mentions_version(text: &str, version: &str) -> bool {
    text.match_indices(version).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + version.len()..].chars().next();
        let part_of_longer = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit() || c == '.');
        !part_of_longer(before) && !part_of_longer(after)
    })
}

#[test]
fn installer_versions_come_from_cargo_toml() {
    let version = env!("CARGO_PKG_VERSION");
    assert!(mentions_version(&read("Cargo.toml"), version));
    for file in [
        "packaging/package.sh",
        "packaging/cargo-meta.sh",
        "packaging/check-deb.sh",
        "packaging/macos/Info.plist",
        "packaging/macos/make-app.sh",
        "packaging/windows/kvlab.wxs",
        "packaging/windows/build-msi.ps1",
    ] {
        assert!(
            !mentions_version(&read(file), version),
            "{file} hard-codes the version {version}: read it from Cargo.toml"
        );
    }
    // macOS: placeholders in Info.plist, filled from cargo metadata by make-app.sh.
    let plist = read("packaging/macos/Info.plist");
    for key in ["CFBundleShortVersionString", "CFBundleVersion"] {
        let after = plist.split(&format!("<key>{key}</key>")).nth(1).unwrap();
        assert!(
            after.trim_start().starts_with("<string>@VERSION@</string>"),
            "{key} is not @VERSION@"
        );
    }
    let make_app = read("packaging/macos/make-app.sh");
    assert!(make_app.contains(". packaging/cargo-meta.sh"));
    assert!(read("packaging/cargo-meta.sh").contains("metadata --format-version 1 --no-deps"));
    assert!(make_app.contains("s/@VERSION@/$version/g"));
    // Windows: the .wxs takes the version as a preprocessor variable that build-msi.ps1 reads.
    let wxs = read("packaging/windows/kvlab.wxs");
    assert!(wxs.contains("Version=\"$(var.Version)\""));
    let ps1 = read("packaging/windows/build-msi.ps1");
    assert!(ps1.contains("metadata --format-version 1 --no-deps"));
    assert!(ps1.contains("\"-dVersion=$msiVersion\""));
}

#[test]
fn sessions_open_in_the_app_on_macos_and_windows() {
    let ext = kvlab::session::EXTENSION;
    let plist = read("packaging/macos/Info.plist");
    for needle in [
        "<string>org.kvlab.kvlab</string>",
        "<key>UTExportedTypeDeclarations</key>",
        "<key>CFBundleDocumentTypes</key>",
        "<string>org.kvlab.session</string>",
        &format!("<string>{ext}</string>"),
        "<string>application/x-kvlab-session</string>",
        "<key>LSMinimumSystemVersion</key>",
        "<key>NSHighResolutionCapable</key>",
    ] {
        assert!(plist.contains(needle), "Info.plist lacks {needle}");
    }
    let wxs = read("packaging/windows/kvlab.wxs");
    assert!(wxs.contains(&format!(
        "<Extension Id=\"{ext}\" ContentType=\"application/x-kvlab-session\">"
    )));
    assert!(wxs.contains("Argument=\"&quot;%1&quot;\""));
    assert!(wxs.contains("Directory=\"ProgramMenuFolder\""));
}

#[cfg(not(target_os = "macos"))]
#[test]
fn make_app_refuses_to_run_off_macos() {
    let out = Command::new("bash")
        .arg(format!(
            "{}/packaging/macos/make-app.sh",
            env!("CARGO_MANIFEST_DIR")
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only runs on macOS"));
}

/// src/console.rs is the only Windows-only code; it is dependency-free so that it compiles alone
/// for Windows here. Needs `rustup target add x86_64-pc-windows-gnu` (skipped, saying so, without).
#[test]
fn the_windows_console_code_compiles_for_windows() {
    const TARGET: &str = "x86_64-pc-windows-gnu";
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == TARGET)
        })
        .unwrap_or(false);
    if !installed {
        eprintln!("skipped: no {TARGET} target (rustup target add {TARGET})");
        return;
    }
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("windows-console");
    std::fs::create_dir_all(&out_dir).unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "lib",
            "--target",
            TARGET,
        ])
        .args(["-D", "warnings", "--out-dir"])
        .arg(&out_dir)
        .arg(format!("{}/src/console.rs", env!("CARGO_MANIFEST_DIR")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "src/console.rs does not compile for Windows:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
