//! Hostile input, as a table: forged and truncated GGUF files made from the demo model's bytes,
//! broken experiments, damaged sessions, bad options, FIFOs and devices, closed pipes, kills
//! during a save. Every case must end in exit code 1 (or succeed, where the input is fine) with a
//! message that names the cause, never a panic, an abort or a hang, and must lose no file.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::model_path;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Forging GGUF files from the demo model's bytes.

/// The demo model's bytes, read once.
fn model_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(model_path()).expect("the test model is readable"))
}

/// Where each metadata key's value starts, its type, and where the key/value list ends.
struct Layout {
    /// key → (offset of the value, GGUF type).
    keys: Vec<(String, usize, u32)>,
    /// Offset just past the last key/value pair.
    end: usize,
}

fn layout(b: &[u8]) -> Layout {
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    fn size(b: &[u8], o: usize, ty: u32) -> usize {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
        match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => 8 + u64_at(o),
            9 => {
                let (elem, n) = (u32_at(o), u64_at(o + 4));
                let mut at = o + 12;
                for _ in 0..n {
                    at += size(b, at, elem);
                }
                at - o
            }
            _ => panic!("type {ty}"),
        }
    }
    let n_kv = u64_at(16);
    let mut at = 24;
    let mut keys = Vec::new();
    for _ in 0..n_kv {
        let len = u64_at(at);
        let key = String::from_utf8(b[at + 8..at + 8 + len].to_vec()).unwrap();
        at += 8 + len;
        let ty = u32_at(at);
        at += 4;
        keys.push((key, at, ty));
        at += size(b, at, ty);
    }
    Layout { keys, end: at }
}

/// One forgery of the demo model.
enum Forge {
    /// A u32 key's value replaced.
    SetU32(&'static str, u32),
    /// A new key/value pair (its GGUF type and value bytes) added after the others.
    Add(&'static str, u32, Vec<u8>),
    /// A new key with a string value.
    AddStr(&'static str, &'static str),
    /// Bytes at an offset replaced.
    Poke(usize, Vec<u8>),
    /// The first key's name made empty (its length field set to 0, the name kept as garbage).
    EmptyFirstKey,
    /// Only the first bytes kept.
    Truncate(usize),
}

fn forged(f: &Forge) -> Vec<u8> {
    let src = model_bytes();
    let l = layout(src);
    let mut b = src.to_vec();
    match f {
        Forge::SetU32(key, v) => {
            let (_, at, ty) = l.keys.iter().find(|k| k.0 == *key).expect("key exists");
            assert_eq!(*ty, 4, "{key} is a u32");
            b[*at..*at + 4].copy_from_slice(&v.to_le_bytes());
        }
        Forge::Add(key, ty, value) => {
            let mut kv = (key.len() as u64).to_le_bytes().to_vec();
            kv.extend(key.as_bytes());
            kv.extend(ty.to_le_bytes());
            kv.extend(value);
            b.splice(l.end..l.end, kv);
            let n = u64::from_le_bytes(b[16..24].try_into().unwrap()) + 1;
            b[16..24].copy_from_slice(&n.to_le_bytes());
        }
        Forge::AddStr(key, text) => {
            let mut v = (text.len() as u64).to_le_bytes().to_vec();
            v.extend(text.as_bytes());
            return forged(&Forge::Add(key, 8, v));
        }
        Forge::Poke(at, bytes) => b[*at..*at + bytes.len()].copy_from_slice(bytes),
        Forge::EmptyFirstKey => {
            // The first key's length → 0; what was its name is read as the type: the reader
            // must stop at the empty key first.
            b[24..32].copy_from_slice(&0u64.to_le_bytes());
        }
        Forge::Truncate(n) => b.truncate(*n),
    }
    b
}

// ---------------------------------------------------------------------------------------------
// Running kvlab and judging the outcome.

fn kvlab_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kvlab"));
    c.env_remove("KVLAB_MODEL")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    c
}

fn run(args: &[String]) -> Output {
    kvlab_bin().args(args).output().expect("kvlab runs")
}

/// What a case expects.
#[derive(Clone, Copy)]
enum Expect {
    /// Exit code 1 and these words in the message.
    Fails(&'static str),
    /// Success; these words on stdout or stderr.
    Succeeds(&'static str),
}

/// Checks an outcome: the exit code, the message, and no sign of a panic or an abort.
fn judge(name: &str, out: &Output, expect: Expect) {
    judge_filled(name, out, expect, &|w| w.to_string())
}

/// [`judge`], with the expected words filled in (`{dir}` → the case's folder).
fn judge_filled(name: &str, out: &Output, expect: Expect, fill: &dyn Fn(&str) -> String) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for bad in [
        "panicked",
        "GGML_ASSERT",
        "stack backtrace",
        "RUST_BACKTRACE",
    ] {
        assert!(!stderr.contains(bad), "{name}: {bad} in stderr: {stderr}");
    }
    match expect {
        Expect::Fails(words) => {
            let words = fill(words);
            let words = words.as_str();
            assert_eq!(
                out.status.code(),
                Some(1),
                "{name}: exit code (killed by a signal if None); stderr: {stderr}"
            );
            assert!(stderr.contains("error: "), "{name}: {stderr}");
            assert!(
                stderr.contains(words),
                "{name}: the message should name the cause ({words:?}): {stderr}"
            );
        }
        Expect::Succeeds(words) => {
            assert!(out.status.success(), "{name}: {stderr}");
            assert!(
                stdout.contains(words) || stderr.contains(words),
                "{name}: expected {words:?}: {stdout} / {stderr}"
            );
        }
    }
}

fn s(p: &Path) -> String {
    p.to_str().expect("test paths are UTF-8").to_string()
}

fn seed() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/assets/experiments/seed-short.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap()
}

/// Every file in a folder with its bytes, to check that nothing was lost or left behind.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("mkfifo runs");
    assert!(st.success());
}

/// A session made by a short real run (4 tokens), once per test binary; the tests copy it.
fn good_session() -> &'static Value {
    static SESSION: OnceLock<Value> = OnceLock::new();
    SESSION.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.json");
        let mut v = seed();
        v["generation"]["max_tokens"] = 4.into();
        std::fs::write(&spec, v.to_string()).unwrap();
        let session = dir.path().join("good.kvlab");
        let out = run(&[
            "run".into(),
            s(&spec),
            "--model".into(),
            s(&model_path()),
            "--session".into(),
            s(&session),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap()
    })
}

// ---------------------------------------------------------------------------------------------
// The corpus.

/// A case's input, made in its own folder.
enum Input {
    /// `inspect` a forged model.
    Model(Forge),
    /// `run` an edited seed experiment (on the demo model), with extra arguments.
    Spec(fn(&mut Value), &'static [&'static str]),
    /// `run` an experiment file with these raw bytes.
    SpecBytes(&'static [u8]),
    /// `report` (or, with `verify`, verify) an edited good session.
    Session(fn(&mut Value), bool),
    /// `report` a session file with these raw bytes.
    SessionBytes(&'static [u8]),
    /// Any command line; `{dir}` is the case's folder, `{model}` the demo model, `{spec}` the
    /// seed experiment, `{session}` a good session in the folder.
    Args(&'static [&'static str]),
}

fn cases() -> Vec<(&'static str, Input, Expect)> {
    use Expect::*;
    use Forge::*;
    use Input::*;
    let u32b = |v: u32| v.to_le_bytes().to_vec();
    vec![
        // #1: values llama.cpp asserts on (the process used to abort).
        (
            "block_count 0",
            Model(SetU32("llama.block_count", 0)),
            Fails("llama.block_count is 0; llama.cpp accepts 1 to 512"),
        ),
        (
            "block_count 513",
            Model(SetU32("llama.block_count", 513)),
            Fails("LLAMA_MAX_LAYERS"),
        ),
        (
            "block_count 2^32-1",
            Model(SetU32("llama.block_count", u32::MAX)),
            Fails("block_count is 4294967295"),
        ),
        (
            "expert_count 2000",
            Model(Add("llama.expert_count", 4, u32b(2000))),
            Fails("llama.expert_count is 2000"),
        ),
        (
            "experts used without experts",
            Model(Add("llama.expert_used_count", 4, u32b(2))),
            Fails("llama.expert_used_count is 2"),
        ),
        (
            "expert groups without experts",
            Model(Add("llama.expert_group_count", 4, u32b(4))),
            Fails("expert_group_count is 4"),
        ),
        (
            "unknown rope scaling",
            Model(AddStr("llama.rope.scaling.type", "bogus")),
            Fails("rope.scaling.type is \"bogus\""),
        ),
        (
            "nextn layers above block_count",
            Model(Add("llama.nextn_predict_layers", 4, u32b(31))),
            Fails("nextn_predict_layers is 31"),
        ),
        // #8: head counts that overflowed the "before loading" estimate.
        (
            "huge KV heads",
            Model(SetU32("llama.attention.head_count_kv", u32::MAX)),
            Fails("head_count_kv is 4294967295"),
        ),
        (
            "huge heads",
            Model(SetU32("llama.attention.head_count", 1 << 30)),
            Fails("head_count is 1073741824"),
        ),
        (
            "huge embedding",
            Model(SetU32("llama.embedding_length", u32::MAX)),
            Fails("embedding_length is 4294967295"),
        ),
        // Kinds that passed before: forged counts, versions, magic, keys, truncations.
        (
            "empty metadata key",
            Model(EmptyFirstKey),
            Fails("empty metadata key"),
        ),
        (
            "duplicate key",
            Model(AddStr("general.architecture", "llama")),
            Fails("appears twice"),
        ),
        (
            "kv count 2^64-1",
            Model(Poke(16, u64::MAX.to_le_bytes().to_vec())),
            Fails("metadata keys"),
        ),
        (
            "kv count +1",
            Model(Poke(16, 1000u64.to_le_bytes().to_vec())),
            Fails("not a GGUF model file"),
        ),
        (
            "tensor count 2^64-1",
            Model(Poke(8, u64::MAX.to_le_bytes().to_vec())),
            Fails("tensors"),
        ),
        (
            "first key length 2^64-1",
            Model(Poke(24, u64::MAX.to_le_bytes().to_vec())),
            Fails("runs past the end"),
        ),
        (
            "version 1",
            Model(Poke(4, u32b(1))),
            Fails("GGUF version 1"),
        ),
        (
            "version 2^32-1",
            Model(Poke(4, u32b(u32::MAX))),
            Fails("GGUF version 4294967295"),
        ),
        (
            "wrong magic",
            Model(Poke(0, b"GGML".to_vec())),
            Fails("not \"GGUF\""),
        ),
        ("empty model", Model(Truncate(0)), Fails("only 0 bytes")),
        ("3-byte model", Model(Truncate(3)), Fails("only 3 bytes")),
        ("header cut at 20", Model(Truncate(20)), Fails("cut off")),
        (
            "metadata cut at 1000",
            Model(Truncate(1000)),
            Fails("truncated"),
        ),
        (
            "metadata cut at 1 MiB",
            Model(Truncate(1 << 20)),
            Fails("truncated"),
        ),
        (
            "weights cut in half",
            Model(Truncate(98_362_432 / 2)),
            Fails("it is truncated"),
        ),
        // #10, #14: files that are not regular files, and names that are not UTF-8.
        (
            "model is a FIFO",
            Args(&["inspect", "{dir}/fifo.gguf"]),
            Fails("is a named pipe (FIFO), not a regular file"),
        ),
        (
            "model is /dev/zero",
            Args(&["inspect", "/dev/zero"]),
            Fails("is a device"),
        ),
        (
            "model is a folder",
            Args(&["inspect", "{dir}"]),
            Fails("is a folder"),
        ),
        (
            "model missing",
            Args(&["inspect", "{dir}/none.gguf"]),
            Fails("model file not found"),
        ),
        (
            "model path not UTF-8",
            Args(&["inspect", "{nonutf8}"]),
            Fails("not valid UTF-8"),
        ),
        // #2, #7, #13: experiments.
        (
            "empty probe",
            Spec(|v| v["probes"] = json!(["", " San"]), &[]),
            Fails("probe 0 is empty"),
        ),
        (
            "misspelled field",
            Spec(
                |v| {
                    let m = v["generation"]["max_tokens"].take();
                    v["generation"]["max_token"] = m;
                    v["generation"]
                        .as_object_mut()
                        .unwrap()
                        .remove("max_tokens");
                },
                &[],
            ),
            Fails("unknown field `max_token`"),
        ),
        (
            "misspelled top-level field",
            Spec(|v| v["probe"] = json!([]), &[]),
            Fails("unknown field `probe`"),
        ),
        (
            "max_tokens 2^64-1",
            Spec(|v| v["generation"]["max_tokens"] = u64::MAX.into(), &[]),
            Fails("max_tokens is 18446744073709551615"),
        ),
        (
            "max_tokens 2^63",
            Spec(|v| v["generation"]["max_tokens"] = (1u64 << 63).into(), &[]),
            Fails("max_tokens is 9223372036854775808"),
        ),
        (
            "max_tokens 1e9",
            Spec(
                |v| v["generation"]["max_tokens"] = 1_000_000_000.into(),
                &[],
            ),
            Fails("max_tokens is 1000000000"),
        ),
        (
            "max_tokens wraps the context",
            Spec(
                |v| v["generation"]["max_tokens"] = 4_294_967_189u64.into(),
                &[],
            ),
            Fails("max_tokens is 4294967189"),
        ),
        (
            "max_tokens above the trained context",
            Spec(|v| v["generation"]["max_tokens"] = 9000.into(), &[]),
            Fails("trained context of 8192 tokens"),
        ),
        (
            "top_k 2^32",
            Spec(|v| v["top_k"] = (1u64 << 32).into(), &[]),
            Fails("top_k is 4294967296"),
        ),
        (
            "300 distinct conditions",
            Spec(
                |v| {
                    let c = v["conditions"][0].clone();
                    v["conditions"] = (0..300)
                        .map(|seed| {
                            let mut c = c.clone();
                            c["op"] = serde_json::json!({"kind": "noise", "seed": seed});
                            c
                        })
                        .collect();
                },
                &[],
            ),
            Fails("at most 256"),
        ),
        (
            "5000 conditions",
            Spec(
                |v| {
                    let c = v["conditions"][0].clone();
                    v["conditions"] = Value::Array(vec![c; 5000]);
                },
                &[],
            ),
            Fails("a grid holds at most 4096"),
        ),
        (
            "no needle",
            Spec(
                |v| v["prompt"]["turns"][0]["content"] = "nowhere".into(),
                &[],
            ),
            Fails("no {needle} placeholder"),
        ),
        (
            "no variants",
            Spec(|v| v["variants"] = json!([]), &[]),
            Fails("no variants"),
        ),
        (
            "sampling without temperature",
            Spec(
                |v| {
                    v["generation"]["sampling"] =
                        json!({"kind": "sample", "temperature": 0.0, "top_p": 1.0, "seed": 1})
                },
                &[],
            ),
            Fails("temperature > 0"),
        ),
        (
            "unknown intervention field",
            Spec(
                |v| {
                    let c = v["conditions"]
                        .as_array_mut()
                        .unwrap()
                        .iter_mut()
                        .find(|c| c["op"]["kind"] == "transplant")
                        .unwrap();
                    c["op"]["form"] = "x".into();
                },
                &[],
            ),
            Fails("unknown field `form`"),
        ),
        (
            "field on an op that takes none",
            Spec(|v| v["conditions"][2]["op"]["from"] = "NY".into(), &[]),
            Fails("zero takes no `from`"),
        ),
        (
            "misspelled field in an old-style condition",
            Spec(
                |v| {
                    v["conditions"][2] =
                        json!({"variant": "SF", "intervention": {"kind": "zero"}, "layer": "3"})
                },
                &[],
            ),
            Fails("unknown field `layer`"),
        ),
        (
            "spec not JSON",
            SpecBytes(b"{ \"variants\": ["),
            Fails("not valid"),
        ),
        (
            "spec not UTF-8",
            SpecBytes(b"{\"name\": \"\xff\xfe\"}"),
            Fails("not UTF-8"),
        ),
        (
            "spec with a BOM (read, then the typo named)",
            SpecBytes(b"\xef\xbb\xbf{\"nmae\": 1}"),
            Fails("unknown field `nmae`"),
        ),
        (
            "spec is /dev/zero",
            Args(&["run", "/dev/zero", "--model", "{model}"]),
            Fails("/dev/zero is a device"),
        ),
        (
            "spec is a FIFO",
            Args(&["run", "{dir}/fifo.json", "--model", "{model}"]),
            Fails("named pipe"),
        ),
        (
            "spec is a folder",
            Args(&["run", "{dir}", "--model", "{model}"]),
            Fails("is a folder"),
        ),
        // #4, #11: options, checked before any work.
        (
            "threads 100000",
            Args(&["run", "{spec}", "--model", "{model}", "--threads", "100000"]),
            Fails("--threads asks for 100000 threads"),
        ),
        (
            "threads 2^31-1",
            Args(&[
                "bench",
                "--quick",
                "--model",
                "{model}",
                "--threads",
                "2147483647",
            ]),
            Fails("2147483647 threads"),
        ),
        (
            "threads 0",
            Args(&["sweep", "{spec}", "--model", "{model}", "--threads", "0"]),
            Fails("0 threads"),
        ),
        (
            "threads -1",
            Args(&["run", "{spec}", "--model", "{model}", "--threads=-1"]),
            Fails("-1 threads"),
        ),
        (
            "--out is a folder",
            Args(&["run", "{spec}", "--model", "{model}", "--out", "{dir}"]),
            Fails("--out {dir} is a folder"),
        ),
        (
            "--out in a missing folder",
            Args(&[
                "run",
                "{spec}",
                "--model",
                "{model}",
                "--out",
                "{dir}/no/r.json",
            ]),
            Fails("does not exist"),
        ),
        (
            "--session is a folder",
            Args(&["run", "{spec}", "--model", "{model}", "--session", "{dir}"]),
            Fails("--session {dir} is a folder"),
        ),
        (
            "--delta-layer 99",
            Args(&["run", "{spec}", "--model", "{model}", "--delta-layer", "99"]),
            Fails("--delta-layer 99 is out of range"),
        ),
        (
            "sweep --out is a folder",
            Args(&["sweep", "{spec}", "--model", "{model}", "--out", "{dir}"]),
            Fails("is a folder"),
        ),
        (
            "sweep unknown variant",
            Args(&["sweep", "{spec}", "--model", "{model}", "--variant", "LA"]),
            Fails("--variant \"LA\""),
        ),
        (
            "report --html is a folder",
            Args(&["report", "{session}", "--html", "{dir}"]),
            Fails("--html {dir} is a folder"),
        ),
        // #13: an unknown subcommand is not a file to open in the app.
        (
            "unknown subcommand",
            Args(&["frobnicate"]),
            Fails("unknown subcommand \"frobnicate\""),
        ),
        (
            "missing file to open",
            Args(&["{dir}/none.kvlab"]),
            Fails("no such file"),
        ),
        // #14: I/O errors once, named.
        (
            "session missing",
            Args(&["report", "{dir}/none.kvlab"]),
            Fails("none.kvlab: No such file"),
        ),
        // #2, #5, #6, #14: sessions.
        (
            "version -1",
            Session(|v| v["version"] = (-1).into(), false),
            Fails("\"version\" field is -1, not a whole number"),
        ),
        (
            "version \"1\"",
            Session(|v| v["version"] = "1".into(), false),
            Fails("\"version\" field is \"1\", not a whole number"),
        ),
        (
            "version 1.5",
            Session(|v| v["version"] = 1.5.into(), false),
            Fails("\"version\" field is 1.5"),
        ),
        (
            "version 2^32+2",
            Session(|v| v["version"] = 4_294_967_298u64.into(), false),
            Fails("session version 4294967298"),
        ),
        (
            "version missing",
            Session(
                |v| {
                    v.as_object_mut().unwrap().remove("version");
                },
                false,
            ),
            Fails("\"version\" field is missing"),
        ),
        (
            "no spec",
            Session(
                |v| {
                    v.as_object_mut().unwrap().remove("spec");
                },
                false,
            ),
            Fails("missing field `spec`"),
        ),
        (
            "results without variants",
            Session(|v| v["results"]["variants"] = json!([]), false),
            Fails("results.variants are []"),
        ),
        (
            "results missing a condition",
            Session(
                |v| {
                    v["results"]["conditions"].as_array_mut().unwrap().pop();
                },
                false,
            ),
            Fails("results.conditions has 7 items"),
        ),
        (
            "condition of an unknown variant",
            Session(
                |v| v["results"]["conditions"][0]["variant"] = "LA".into(),
                false,
            ),
            Fails("results.conditions[0] is of variant \"LA\""),
        ),
        (
            "n_batch below the sequences",
            Session(|v| v["results"]["settings"]["n_batch"] = 3.into(), true),
            Fails("settings.n_batch is 3"),
        ),
        (
            "n_batch 2^32-1",
            Session(
                |v| v["results"]["settings"]["n_batch"] = u32::MAX.into(),
                true,
            ),
            Fails("settings.n_batch is 4294967295"),
        ),
        (
            "threads 100000 in a session",
            Session(
                |v| v["results"]["settings"]["threads"] = 100_000.into(),
                true,
            ),
            Fails("settings.threads is 100000"),
        ),
        (
            "empty probe in a session",
            Session(|v| v["spec"]["probes"] = json!([""]), false),
            Fails("probe 0 is empty"),
        ),
        (
            "NaN written as null by older kvlab",
            Session(
                |v| {
                    v["results"]["conditions"][0]["generation"]["steps"][0]["probes"][0] =
                        Value::Null
                },
                false,
            ),
            Succeeds("| condition |"),
        ),
        (
            "NaN, ±Infinity",
            Session(
                |v| {
                    let st = &mut v["results"]["conditions"][1]["generation"]["steps"][0];
                    st["probes"][0] = "NaN".into();
                    st["gap"] = "Infinity".into();
                    st["top"][1]["logprob"] = "-Infinity".into();
                },
                false,
            ),
            Succeeds("| condition |"),
        ),
        (
            "model path to a forged GGUF",
            Session(|v| v["model"]["path"] = "{dir}/forged.gguf".into(), true),
            Fails("llama.block_count is 0"),
        ),
        (
            "session truncated",
            SessionBytes(b"{\"format\": \"kvlab-session\", \"vers"),
            Fails("is truncated"),
        ),
        ("session empty", SessionBytes(b""), Fails("is truncated")),
        (
            "session not JSON",
            SessionBytes(b"hello"),
            Fails("not JSON"),
        ),
        (
            "session not UTF-8",
            SessionBytes(b"{\"a\": \"\xff\"}"),
            Fails("not UTF-8"),
        ),
        (
            "session of another format",
            SessionBytes(b"{\"format\": \"other\"}"),
            Fails("not a kvlab session"),
        ),
        (
            "session is /dev/zero",
            Args(&["report", "/dev/zero"]),
            Fails("/dev/zero is a device, not a session file"),
        ),
        (
            "session is a FIFO",
            Args(&["verify", "{dir}/fifo.kvlab"]),
            Fails("named pipe"),
        ),
        (
            "session is a folder",
            Args(&["report", "{dir}"]),
            Fails("is a folder"),
        ),
    ]
}

/// Runs one case in its own folder; checks the outcome and that no file was lost or added
/// (other than the outputs a successful command writes).
fn run_case(name: &str, input: &Input, expect: Expect) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fill = |a: &str| -> String {
        a.replace("{dir}", &s(d))
            .replace("{model}", &s(&model_path()))
            .replace("{spec}", &s(&d.join("seed.json")))
            .replace("{session}", &s(&d.join("good.kvlab")))
    };
    // Short runs: a case that wrongly passes its check ends in seconds, not minutes.
    let mut short = seed();
    short["generation"]["max_tokens"] = 2.into();
    std::fs::write(d.join("seed.json"), short.to_string()).unwrap();
    let args: Vec<String> = match input {
        Input::Model(f) => {
            let p = d.join("forged.gguf");
            std::fs::write(&p, forged(f)).unwrap();
            vec!["inspect".into(), s(&p)]
        }
        Input::Spec(edit, extra) => {
            let mut v = short.clone();
            edit(&mut v);
            std::fs::write(d.join("edited.json"), v.to_string()).unwrap();
            let mut a = vec![
                "run".into(),
                s(&d.join("edited.json")),
                "--model".into(),
                s(&model_path()),
            ];
            a.extend(extra.iter().map(|x| fill(x)));
            a
        }
        Input::SpecBytes(b) => {
            std::fs::write(d.join("raw.json"), b).unwrap();
            vec![
                "run".into(),
                s(&d.join("raw.json")),
                "--model".into(),
                s(&model_path()),
            ]
        }
        Input::Session(edit, verify) => {
            let mut v = good_session().clone();
            edit(&mut v);
            let text = v.to_string().replace("{dir}", &s(d));
            std::fs::write(d.join("edited.kvlab"), text).unwrap();
            std::fs::write(
                d.join("forged.gguf"),
                forged(&Forge::SetU32("llama.block_count", 0)),
            )
            .unwrap();
            let cmd = if *verify { "verify" } else { "report" };
            vec![cmd.into(), s(&d.join("edited.kvlab"))]
        }
        Input::SessionBytes(b) => {
            std::fs::write(d.join("raw.kvlab"), b).unwrap();
            vec!["report".into(), s(&d.join("raw.kvlab"))]
        }
        Input::Args(a) => {
            for fifo in ["fifo.gguf", "fifo.json", "fifo.kvlab"] {
                mkfifo(&d.join(fifo));
            }
            std::fs::write(d.join("good.kvlab"), good_session().to_string()).unwrap();
            if a.contains(&"{nonutf8}") {
                use std::os::unix::ffi::OsStrExt;
                let p = d.join(std::ffi::OsStr::from_bytes(b"mod\xffel.gguf"));
                std::os::unix::fs::symlink(model_path(), &p).unwrap();
                let mut c = kvlab_bin();
                c.arg("inspect").arg(&p);
                let out = c.output().unwrap();
                judge(name, &out, expect);
                return;
            }
            a.iter().map(|x| fill(x)).collect()
        }
    };
    let before = snapshot(d);
    let out = run(&args);
    judge_filled(name, &out, expect, &fill);
    if matches!(expect, Expect::Fails(_)) {
        assert_eq!(snapshot(d), before, "{name}: files changed or left behind");
    }
}

#[test]
fn the_corpus() {
    let cases = cases();
    assert!(cases.len() >= 80, "{} cases", cases.len());
    for (name, input, expect) in &cases {
        run_case(name, input, *expect);
    }
}

#[test]
fn a_session_written_with_a_nan_opens_and_verifies_with_any_thread_count() {
    // #2, #4, #13: the session of a run records NaN-free results; with NaN put in through the
    // API it still saves and opens. verify re-runs with a thread count this machine has and does
    // not call threads a difference.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.kvlab");
    let mut v = good_session().clone();
    v["results"]["settings"]["threads"] = 5000.into();
    let mut session = kvlab::session::Session::from_json(&v.to_string(), "s").unwrap();
    session.save(&path).unwrap();
    let out = run(&["verify".into(), s(&path)]);
    judge(
        "verify, 5000 threads recorded",
        &out,
        Expect::Succeeds("reproduces its results exactly"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("5000 threads"));
    let out = run(&["verify".into(), s(&path), "--threads".into(), "1".into()]);
    judge(
        "verify --threads 1",
        &out,
        Expect::Succeeds("reproduces its results exactly"),
    );

    let r = session.results.as_mut().unwrap();
    r.conditions[0].generation.steps[0].probes[0] = f32::NAN;
    r.conditions[0].generation.steps[0].gap = f32::INFINITY;
    session.save(&path).unwrap();
    let out = run(&["report".into(), s(&path)]);
    judge(
        "report of a session with NaN",
        &out,
        Expect::Succeeds("| condition |"),
    );
}

#[test]
fn a_span_sweep_with_the_largest_max_extra_ends() {
    // #10: `--max-extra 18446744073709551615` used to spin; spans stop at the prompt's end.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    let mut v = seed();
    v["generation"]["max_tokens"] = 2.into();
    std::fs::write(&spec, v.to_string()).unwrap();
    let out = run(&[
        "sweep".into(),
        s(&spec),
        "--model".into(),
        s(&model_path()),
        "--over".into(),
        "span".into(),
        "--max-extra".into(),
        u64::MAX.to_string(),
    ]);
    judge(
        "span sweep, max-extra 2^64-1",
        &out,
        Expect::Succeeds("6..7"),
    );
}

#[test]
fn a_closed_or_full_stdout_ends_every_command_cleanly() {
    // #9: the reader goes away before kvlab writes; kvlab must end with a message and code 1.
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("good.kvlab");
    std::fs::write(&session, good_session().to_string()).unwrap();
    let commands: Vec<Vec<String>> = vec![
        vec!["inspect".into(), s(&model_path())],
        vec!["report".into(), s(&session)],
    ];
    for args in &commands {
        let mut child = kvlab_bin()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        judge(
            &format!("{args:?} | (closed)"),
            &out,
            Expect::Fails("cannot write to standard output"),
        );
        if cfg!(target_os = "linux") {
            let full = std::fs::File::create("/dev/full").unwrap();
            let out = kvlab_bin()
                .args(args)
                .stdout(full)
                .stderr(Stdio::piped())
                .output()
                .unwrap();
            judge(
                &format!("{args:?} > /dev/full"),
                &out,
                Expect::Fails("No space left on device"),
            );
        }
    }
    // An I/O error's text is printed once.
    let out = run(&["report".into(), s(&dir.path().join("none.kvlab"))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
}

#[test]
fn kills_during_a_save_lose_neither_the_session_nor_its_backup() {
    // #3: `run --session NAME` onto an existing NAME and NAME.bak, killed at several points
    // (SIGKILL, SIGTERM, SIGINT; some while the save's temporary file exists). Afterwards NAME
    // and NAME.bak always open, and the next save leaves no temporary file behind.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spec = d.join("spec.json");
    let mut v = seed();
    v["generation"]["max_tokens"] = 2.into();
    std::fs::write(&spec, v.to_string()).unwrap();
    let name = d.join("s.kvlab");
    let bak = d.join("s.kvlab.bak");
    let mut good = kvlab::session::Session::from_json(&good_session().to_string(), "g").unwrap();
    good.notes = "older".into();
    good.save(&name).unwrap();
    good.notes = "old".into();
    good.save(&name).unwrap();
    let load = |p: &Path| kvlab::session::Session::load(p);
    let mut killed_during_save = 0;
    let plans: Vec<(&str, Option<u64>)> = vec![
        ("KILL", Some(0)),
        ("KILL", Some(150)),
        ("TERM", Some(300)),
        ("INT", Some(600)),
        ("KILL", None),
        ("KILL", None),
        ("TERM", None),
        ("KILL", Some(1200)),
    ];
    for (signal, after_ms) in plans {
        let mut child = kvlab_bin()
            .args([
                "run",
                &s(&spec),
                "--model",
                &s(&model_path()),
                "--session",
                &s(&name),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        match after_ms {
            Some(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
            None => {
                // Wait for the save's temporary file, then kill at once.
                let tmp = format!(".s.kvlab.{pid}.tmp");
                let bak_tmp = format!(".s.kvlab.bak.{pid}.tmp");
                loop {
                    if d.join(&tmp).exists() || d.join(&bak_tmp).exists() {
                        killed_during_save += 1;
                        break;
                    }
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                    std::thread::yield_now();
                }
            }
        }
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status();
        let _ = child.wait();
        load(&name).unwrap_or_else(|e| panic!("{signal} after {after_ms:?}: {e}"));
        load(&bak).unwrap_or_else(|e| panic!("{signal} after {after_ms:?}: backup: {e}"));
    }
    eprintln!("{killed_during_save} kills while a temporary file existed");
    // The next save removes what killed saves left, and leaves nothing of its own.
    good.notes = "after".into();
    good.save(&name).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["s.kvlab", "s.kvlab.bak", "spec.json"]);
    assert_eq!(load(&name).unwrap().notes, "after");
}

#[test]
fn saving_through_a_symlink_keeps_the_link_and_the_mode() {
    // #12, through the command line.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let target = d.join("real.kvlab");
    std::fs::write(&target, good_session().to_string()).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = d.join("link.md");
    std::os::unix::fs::symlink("real.md", &link).unwrap();
    std::fs::write(d.join("real.md"), "old report").unwrap();
    std::fs::set_permissions(d.join("real.md"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&["report".into(), s(&target), "--markdown".into(), s(&link)]);
    judge("report through a link", &out, Expect::Succeeds("wrote"));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let md = std::fs::read_to_string(d.join("real.md")).unwrap();
    assert!(md.contains("| condition |"), "{md}");
    let mode = std::fs::metadata(d.join("real.md"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_to_string(d.join("real.md.bak")).unwrap(),
        "old report"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// The real model's header with one byte changed, cut anywhere: the reader never panics.
    #[test]
    fn the_header_reader_never_panics_on_a_damaged_real_header(
        pos in 0usize..4096,
        byte in proptest::num::u8::ANY,
        cut in 0usize..(3 << 20),
    ) {
        let b = model_bytes();
        let mut h = b[..cut.min(b.len())].to_vec();
        if let Some(x) = h.get_mut(pos) {
            *x = byte;
        }
        let _ = kvlab::gguf::summary_from_bytes(&h);
    }

    /// A good session with one character changed: the reader never panics.
    #[test]
    fn the_session_reader_never_panics_on_a_damaged_session(
        pos in 0usize..1_000_000,
        byte in 0x20u8..0x7f,
    ) {
        let text = good_session().to_string();
        let mut b = text.into_bytes();
        let i = pos % b.len();
        b[i] = byte;
        let _ = kvlab::session::Session::from_json(&String::from_utf8_lossy(&b), "x");
    }
}
