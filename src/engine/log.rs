//! llama.cpp's log, routed into `tracing`, and the recent errors kept for user-facing messages.
//!
//! llama.cpp explains a failed load only in its log ("tensor data is not within file bounds"…);
//! [`ErrorCapture`] keeps the last such lines so an [`super::EngineError`] can quote them.

use std::collections::VecDeque;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

const KEEP: usize = 8;
static RECENT: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// The tracing target llama-cpp-2 logs llama.cpp's messages under.
pub const LLAMA_TARGET: &str = "llama-cpp-2";

/// A `tracing` layer that remembers llama.cpp's recent error lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct ErrorCapture;

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.trim().to_string();
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}").trim().to_string();
        }
    }
}

impl<S: Subscriber> Layer<S> for ErrorCapture {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != LLAMA_TARGET || *meta.level() > Level::WARN {
            return;
        }
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        if v.0.is_empty() {
            return;
        }
        if let Ok(mut recent) = RECENT.lock() {
            if recent.len() == KEEP {
                recent.pop_front();
            }
            recent.push_back(v.0);
        }
    }
}

/// Forgets what was captured (called before an operation whose errors we want to quote).
pub fn clear_recent() {
    if let Ok(mut r) = RECENT.lock() {
        r.clear();
    }
}

/// The llama.cpp warning and error lines captured since [`clear_recent`], oldest first.
pub fn recent() -> Vec<String> {
    RECENT
        .lock()
        .map(|r| r.iter().cloned().collect())
        .unwrap_or_default()
}

/// Installs the process-wide subscriber: terminal output filtered by `RUST_LOG` or the
/// verbosity (0: kvlab warnings only, llama.cpp silent; 1: kvlab info and llama.cpp warnings;
/// 2+: debug for both), plus [`ErrorCapture`]. Safe to call more than once.
pub fn init(verbosity: u8) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let default = match verbosity {
        0 => "warn,llama-cpp-2=off",
        1 => "info,llama-cpp-2=warn",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(verbosity > 1)
        .with_filter(filter);
    let capture = ErrorCapture.with_filter(tracing_subscriber::filter::LevelFilter::WARN);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(capture)
        .try_init();
}
