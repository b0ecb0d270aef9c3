//! `packaging/install-deps.sh` decides what a machine lacks by asking dpkg, and finds libclang the
//! way bindgen does. These tests run its detection against a fake `dpkg-query` and a fake root
//! folder, so they say what it would install on a machine other than this one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every Debian package the script may ask for.
const PACKAGES: &[&str] = &[
    "g++",
    "cmake",
    "clang",
    "libclang-dev",
    "python3",
    "python3-pip",
    "libx11-dev",
    "libxkbcommon-dev",
    "libgl1-mesa-dri",
    "xvfb",
    "imagemagick",
    "mesa-vulkan-drivers",
    "chromium",
];

/// A fake machine: a `dpkg-query` that knows only `installed`, and a root holding `lib_files`.
struct FakeMachine {
    dir: tempfile::TempDir,
}

impl FakeMachine {
    fn new(installed: &[&str], lib_files: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        // dpkg-query -W -f='${Status}' NAME, as dpkg answers it.
        let script = format!(
            "#!/bin/sh\nfor last; do :; done\ncase \" {} \" in\n  *\" $last \"*) printf 'install ok installed' ;;\n  *) echo \"dpkg-query: no packages found matching $last\" >&2; exit 1 ;;\nesac\n",
            installed.join(" ")
        );
        let dpkg = bin.join("dpkg-query");
        std::fs::write(&dpkg, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dpkg, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in lib_files {
            let p = dir.path().join("root").join(f.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn run(&self, flag: &str, libclang_path: Option<&Path>) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/install-deps.sh"
        ))
        .arg(flag)
        .env("PATH", path)
        .env("KVLAB_DEPS_ROOT", self.root())
        .env("KVLAB_DEPS_OS", "Linux")
        .env_remove("LIBCLANG_PATH");
        if let Some(p) = libclang_path {
            cmd.env("LIBCLANG_PATH", p);
        }
        cmd.output().unwrap()
    }

    /// The packages `--dry-run` would install, in order.
    fn would_install(&self) -> Vec<String> {
        let out = self.run("--dry-run", None);
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.contains("nothing to install") {
            return vec![];
        }
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("would run: "))
            .unwrap_or_else(|| panic!("no install command in:\n{stdout}"));
        let args = line
            .split_once("apt-get install -y -qq ")
            .unwrap_or_else(|| panic!("not an apt-get install: {line}"))
            .1;
        args.split_whitespace().map(String::from).collect()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn all_but(skip: &[&str]) -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|p| !skip.contains(p))
        .collect()
}

const LIBCLANG: &str = "/usr/lib/llvm-14/lib/libclang.so.1";
const LIBCLANG_CPP: &str = "/usr/lib/x86_64-linux-gnu/libclang-cpp.so.14";

/// The machine that fooled the old glob: Debian 12's image ships libclang-cpp14 and nothing else of
/// clang's.
#[test]
fn libclang_cpp_alone_is_not_libclang() {
    let m = FakeMachine::new(
        &all_but(&["clang", "libclang-dev"]),
        &[LIBCLANG_CPP, "/usr/lib/llvm-14/lib/libclang-cpp.so.14"],
    );
    assert_eq!(m.would_install(), ["clang", "libclang-dev"]);
    let out = m.run("--check", None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    assert!(report.contains("MISSING  libclang (bindgen)"), "{report}");
    assert!(report.contains("libclang-cpp does not count"), "{report}");
}

#[test]
fn a_complete_machine_needs_nothing() {
    let m = FakeMachine::new(PACKAGES, &[LIBCLANG_CPP, LIBCLANG]);
    assert!(m.would_install().is_empty());
    let out = m.run("--check", None);
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    assert!(!report.contains("MISSING"), "{report}");
    assert!(
        report.contains("loads "),
        "names the libclang file: {report}"
    );
    assert!(report.contains("all requirements met"), "{report}");
}

/// Each package, missing alone, is the one asked for.
#[test]
fn each_missing_package_is_asked_for() {
    for p in PACKAGES {
        let m = FakeMachine::new(&all_but(&[p]), &[LIBCLANG]);
        assert_eq!(m.would_install(), [*p], "with only {p} missing");
        let out = m.run("--check", None);
        assert_eq!(out.status.code(), Some(1), "--check with {p} missing");
        assert!(
            text(&out).contains(&format!("{p} (not installed)")),
            "{}",
            text(&out)
        );
    }
}

/// dpkg says libclang-dev is installed, but no file bindgen loads is there (a broken or partial
/// install): reinstalling libclang-dev is the fix, and --check says what is wrong.
#[test]
fn an_installed_package_without_its_library_is_missing() {
    let m = FakeMachine::new(PACKAGES, &[LIBCLANG_CPP]);
    assert_eq!(m.would_install(), ["libclang-dev"]);
    let out = m.run("--check", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("MISSING  libclang file (bindgen)"));
}

/// LIBCLANG_PATH is where bindgen looks when it is set, so it is where the check looks too.
#[test]
fn libclang_path_is_honoured() {
    let m = FakeMachine::new(PACKAGES, &["/opt/llvm/lib/libclang-17.so.17", LIBCLANG]);
    let good = m.root().join("opt/llvm/lib");
    let out = m.run("--check", Some(&good));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("libclang-17.so.17"));
    let empty = m.root().join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&empty).unwrap();
    let out = m.run("--check", Some(&empty));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("LIBCLANG_PATH="));
}

#[test]
fn unknown_options_are_refused() {
    let m = FakeMachine::new(PACKAGES, &[LIBCLANG]);
    let out = m.run("--frobnicate", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unknown option"));
}
