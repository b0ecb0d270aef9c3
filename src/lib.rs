//! kvlab: KV-cache surgery on local LLMs through llama.cpp.
//!
//! - [`engine`]: the only code that touches llama.cpp (model, inference, KV state bytes).
//! - [`gguf`]: a GGUF file's metadata without llama.cpp (describe a model before loading it).
//! - [`experiment`]: pure logic: the experiment spec, needle finding, metrics, results, grid.
//! - [`runner`]: runs an experiment on a loaded model (the seed's protocol).
//! - [`session`]: session files on disk and shareable reports.
//! - [`bench`]: speed figures (`kvlab bench`).
//! - [`cli`]: the command line.
//! - [`console`]: the console window on Windows (kept for the CLI, let go for the app).
//! - [`ui`]: the desktop app.

#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod console;
pub mod engine;
pub mod experiment;
pub mod gguf;
pub mod runner;
pub mod session;
pub mod ui;
