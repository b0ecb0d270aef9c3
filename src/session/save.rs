//! Saving without losing anything: the new contents go to a temporary file beside the target,
//! synced, then renamed over it; the previous file becomes `NAME.bak` the same way. A crash, a
//! kill or a full disk at any point leaves the last good file and its backup intact, and the
//! temporary files are removed on every path out.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{SessionError, backup_path};

/// A simulated failure, for testing that interrupted saves lose nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No failure.
    None,
    /// Writing the new contents fails halfway (a full disk).
    WriteFails,
    /// Copying the previous file to its backup fails halfway (a full disk).
    BackupFails,
    /// Stop after writing the temporary file and rotating the backup, before the new file
    /// replaces the target (a crash).
    BeforeRename,
}

/// Removes the temporary files of a save when it ends, however it ends (on success they have
/// been renamed away and there is nothing left to remove).
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The file a path names after following symbolic links (saving through a link writes its
/// target, which may not exist yet).
fn resolve_links(path: &Path) -> std::io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// Whether a process with this id is running (Linux; elsewhere every process counts as running,
/// so nothing is removed).
fn process_running(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Removes temporary files that earlier saves of `name` in `dir` left when they were killed
/// (`.NAME.PID.tmp`, `.NAME.bak.PID.tmp` of processes no longer running).
fn remove_stale_temps(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(middle) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(".tmp"))
        else {
            continue;
        };
        let pid = middle.strip_prefix("bak.").unwrap_or(middle);
        if let Ok(pid) = pid.parse::<u32>()
            && pid != std::process::id()
            && !process_running(pid)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `bytes`, then syncs; `fault` makes the write fail halfway.
fn write_synced(path: &Path, bytes: &[u8], fail: bool) -> std::io::Result<std::fs::File> {
    let mut f = std::fs::File::create(path)?;
    if fail {
        f.write_all(&bytes[..bytes.len() / 2])?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "simulated: no space left on device",
        ));
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(f)
}

/// Writes `bytes` to `path` so that no failure (a crash, a kill, a full disk) leaves a
/// half-written file or a damaged backup:
///
/// 1. symbolic links are followed: their target is written, the link stays;
/// 2. a temporary file beside the target gets the bytes (and the target's permissions), synced;
/// 3. the previous file is copied to a second temporary file, synced, and renamed to `path.bak`
///    (so the backup is replaced in one step, never truncated);
/// 4. the first temporary file is renamed over the target and the folder synced.
///
/// Temporary files are removed on every error; those of a killed save are removed by the next
/// save of the same file. A folder (or a FIFO, a device) as the target is refused before
/// anything is written.
pub fn write_atomic(path: &Path, bytes: &[u8], fault: Fault) -> Result<(), SessionError> {
    let io = |e: std::io::Error| SessionError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let target = resolve_links(path).map_err(io)?;
    let existing = match std::fs::metadata(&target) {
        Ok(m) => {
            if let Some(kind) = crate::gguf::not_a_regular_file(&m) {
                return Err(SessionError::NotAFile(format!(
                    "cannot save to {}: it is {kind}; give a file name",
                    path.display()
                )));
            }
            Some(m)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "session".into());
    remove_stale_temps(dir, &name);
    let pid = std::process::id();
    let tmp = dir.join(format!(".{name}.{pid}.tmp"));
    let bak_tmp = dir.join(format!(".{name}.bak.{pid}.tmp"));
    let _cleanup = TempFiles(vec![tmp.clone(), bak_tmp.clone()]);

    let f = write_synced(&tmp, bytes, fault == Fault::WriteFails).map_err(io)?;
    if let Some(m) = &existing {
        f.set_permissions(m.permissions()).map_err(io)?;
    }
    drop(f);
    if existing.is_some() {
        if fault == Fault::BackupFails {
            let old = std::fs::read(&target).map_err(io)?;
            write_synced(&bak_tmp, &old, true).map_err(io)?;
        }
        std::fs::copy(&target, &bak_tmp).map_err(io)?;
        std::fs::File::open(&bak_tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&bak_tmp, backup_path(&target)).map_err(io)?;
    }
    if fault == Fault::BeforeRename {
        return Err(io(std::io::Error::other("simulated crash before rename")));
    }
    std::fs::rename(&tmp, &target).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
