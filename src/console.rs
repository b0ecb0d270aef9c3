//! The console window on Windows. kvlab.exe is one binary for the command line and the app, so it
//! is a console program: started from a terminal it writes there and the shell waits for it. When
//! the Start menu or Explorer starts it, Windows opens a console just for it; the app lets that go
//! before its window opens. (A GUI-subsystem binary would avoid the brief console, but then shells
//! stop waiting for `kvlab run` and its output interleaves with the prompt.) No-ops elsewhere.
//!
//! Dependency-free on purpose, so that `rustc --target x86_64-pc-windows-gnu` can check it alone.

/// Whether the console this process writes to was opened for it alone (started from the Start
/// menu, Explorer or a file association rather than from a terminal). False off Windows.
pub fn is_own() -> bool {
    #[cfg(windows)]
    {
        let mut ids = [0u32; 2];
        // SAFETY: the buffer and its length agree; the call only writes process ids into it.
        let n = unsafe { win::GetConsoleProcessList(ids.as_mut_ptr(), ids.len() as u32) };
        n == 1
    }
    #[cfg(not(windows))]
    false
}

/// Closes a console that [`is_own`] says belongs to this process alone; leaves a terminal's
/// console alone. Call it just before the app's window opens.
pub fn release_if_own() {
    #[cfg(windows)]
    if is_own() {
        // SAFETY: detaching from the console has no preconditions; later writes to stdout fail
        // quietly (Rust's std ignores writes to a missing console handle).
        unsafe {
            win::FreeConsole();
        }
    }
}

#[cfg(windows)]
mod win {
    #[link(name = "kernel32")]
    unsafe extern "system" {
        pub fn GetConsoleProcessList(process_ids: *mut u32, count: u32) -> u32;
        pub fn FreeConsole() -> i32;
    }
}
