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

#[test]
fn icons_render_in_every_hicolor_size() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "{}/packaging/linux/make-icons.sh",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("bash")
        .arg(script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for size in [16, 24, 32, 48, 64, 128, 256, 512] {
        let png = dir
            .path()
            .join(format!("hicolor/{size}x{size}/apps/kvlab.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|_| panic!("{} missing", png.display()));
        assert_eq!(&bytes[1..4], b"PNG");
        // The PNG header's width and height.
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (size, size));
    }
}
