//! The commands that read: `report` (a session as HTML, Markdown or CSV), `bench` and
//! `inspect` (a model's metadata and tokens).

use std::io::Write;

use anyhow::Result;

use super::args::{BenchArgs, InspectArgs, ReportArgs};
use super::checks::{check_output, load, threads_arg};
use crate::engine;
use crate::session::{Session, report};

/// `kvlab report`: a session as a report, printed or written to files.
pub(super) fn report(args: ReportArgs) -> Result<()> {
    let ReportArgs {
        session,
        html,
        markdown,
        csv,
    } = args;
    for (path, option) in [
        (&html, "--html"),
        (&markdown, "--markdown"),
        (&csv, "--csv"),
    ] {
        if let Some(path) = path {
            check_output(path, option)?;
        }
    }
    let s = Session::load(&session)?;
    if html.is_none() && markdown.is_none() && csv.is_none() {
        say!("{}", report::markdown(&s));
        return Ok(());
    }
    let outputs = [
        (html, report::html as fn(&Session) -> String),
        (markdown, report::markdown),
        (csv, report::csv),
    ];
    for (path, render) in outputs {
        if let Some(path) = path {
            crate::session::write_atomic(
                &path,
                render(&s).as_bytes(),
                crate::session::Fault::None,
            )?;
            note!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// `kvlab bench`: speed ratios against bare llama.cpp loops on this machine.
pub(super) fn bench(args: BenchArgs, gpu_layers: Option<u32>) -> Result<()> {
    let BenchArgs {
        model,
        quick,
        json,
        threads,
        scale,
        prompt_tokens,
        items,
    } = args;
    let threads = threads_arg(threads)?;
    if scale {
        if items == 0 || prompt_tokens < 64 {
            anyhow::bail!("--scale needs --items of at least 1 and --prompt-tokens of at least 64");
        }
        let r =
            crate::bench::scale::run(&model, prompt_tokens, items, threads, |s| note!("{s} …"))?;
        if json {
            say!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            say!("{}", crate::bench::scale::to_table(&r));
        }
        return Ok(());
    }
    let model = load(&model, gpu_layers)?;
    let r = crate::bench::run(&model, quick, threads, |s| note!("{s} …"))?;
    if json {
        say!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        say!("{}", crate::bench::to_table(&r));
    }
    Ok(())
}

/// `kvlab inspect`: a model's metadata, devices, the KV cache's home, and tokens of a text.
pub(super) fn inspect(args: InspectArgs, gpu_layers: Option<u32>) -> Result<()> {
    let InspectArgs {
        model,
        text,
        special,
    } = args;
    let m = load(&model, gpu_layers)?;
    let info = m.info();
    let fp = m.fingerprint();
    say!(
        "file           {} ({:.1} MiB)",
        fp.file_name,
        fp.file_size as f64 / (1 << 20) as f64
    );
    say!("architecture   {}", info.architecture);
    if let Some(name) = &info.name {
        say!("name           {name}");
    }
    say!("quantization   {}", info.quantization);
    say!("parameters     {:.1} M", info.n_params as f64 / 1e6);
    say!("layers         {}", info.n_layer);
    say!(
        "heads          {} (KV heads {})",
        info.n_head,
        info.n_head_kv
    );
    say!("embedding      {}", info.n_embd);
    say!("context        {} (trained)", info.n_ctx_train);
    say!("vocabulary     {}", info.n_vocab);
    say!(
        "chat template  {}",
        if info.has_chat_template { "yes" } else { "no" }
    );
    say!(
        "adds BOS       {}",
        if info.adds_bos { "yes" } else { "no" }
    );
    let devices = engine::devices();
    for (i, d) in devices.iter().enumerate() {
        let head = if i == 0 { "devices" } else { "" };
        say!("{head:<15}{}", d.summary());
    }
    say!(
        "KV cache       {}",
        engine::kv_cache_home(&devices, gpu_layers, info.n_layer)
    );
    if let Some(a) = m.attention_summary() {
        say!("attention      {a}");
    }
    match m.check_kv_surgery_supported() {
        Ok(()) => say!("KV surgery     supported"),
        Err(e) => say!("KV surgery     not supported: {e}"),
    }
    if let Some(text) = text {
        let tokens = m.tokenize(&text, true, special)?;
        say!("\n{} tokens:", tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            say!("{i:>5}  {:>7}  {:?}", t.id, t.piece);
        }
    }
    Ok(())
}
