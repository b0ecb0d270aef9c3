//! Loading a GGUF model and what kvlab needs from it: metadata, tokens, prompt rendering.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel, RopeType};
use llama_cpp_2::token::LlamaToken;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{EngineError, backend, log};

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Layers to offload to a GPU (`None`: llama.cpp's default, all when a GPU backend exists).
    pub n_gpu_layers: Option<u32>,
}

/// What a user wants to know about a model before and after loading it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `general.architecture` (llama, qwen2, …).
    pub architecture: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// Transformer layers.
    pub n_layer: u32,
    /// Attention heads.
    pub n_head: u32,
    /// KV heads (fewer than `n_head` with grouped-query attention).
    pub n_head_kv: u32,
    /// Embedding size.
    pub n_embd: u32,
    /// Context length the model was trained with.
    pub n_ctx_train: u32,
    /// Vocabulary size.
    pub n_vocab: u32,
    /// Parameter count.
    pub n_params: u64,
    /// The file's quantization (`general.file_type` as a name).
    pub quantization: String,
    /// Whether the GGUF carries a chat template.
    pub has_chat_template: bool,
    /// Whether the tokenizer asks for a BOS token at the start.
    pub adds_bos: bool,
    /// The sliding window in tokens, for a model whose llama.cpp cache has sliding layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<u32>,
    /// The layers that slide (the others see every token); empty for other models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sliding_layers: Vec<u32>,
    /// Values per K and per V head (`<arch>.attention.key_length` / `value_length`, else
    /// `n_embd / n_head`); 0 in files from before they were recorded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub head_dim: (u32, u32),
}

fn is_zero(d: &(u32, u32)) -> bool {
    *d == (0, 0)
}

impl ModelInfo {
    /// Values per K head and per V head (`n_embd / n_head` when not recorded).
    pub fn head_dims(&self) -> (u32, u32) {
        match self.head_dim {
            (0, 0) => {
                let d = self.n_embd.checked_div(self.n_head).unwrap_or(0);
                (d, d)
            }
            d => d,
        }
    }
}

/// Identifies a model file cheaply: name, size and a hash of its first and last MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFingerprint {
    /// File name without folders.
    pub file_name: String,
    /// Size in bytes.
    pub file_size: u64,
    /// sha256 (hex) of the first MiB, the last MiB and the size.
    pub sha256_head_tail: String,
}

/// One token with the text it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPiece {
    /// The token id.
    pub id: i32,
    /// Its text (lossy UTF-8; special tokens rendered by name).
    pub piece: String,
}

/// A loaded model, ready to tokenize and to open [`super::Lab`]s on.
pub struct LoadedModel {
    pub(crate) model: LlamaModel,
    path: PathBuf,
    info: ModelInfo,
    fingerprint: ModelFingerprint,
    /// Whether kvlab can edit this model's cache, and if not why: judged once at load.
    surgery: Result<(), String>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish()
    }
}

/// Reads a GGUF file's metadata (magic, version, keys) before llama.cpp sees it, so that a wrong
/// or truncated file is explained in words instead of failing inside the loader.
pub fn check_gguf_header(path: &Path) -> Result<(), EngineError> {
    use crate::gguf::GgufError;
    match crate::gguf::read_summary(path) {
        Ok(_) => Ok(()),
        Err(GgufError::Io { path, source }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(EngineError::ModelNotFound(path))
        }
        Err(GgufError::Io { path, source }) => Err(EngineError::Io { path, source }),
        Err(GgufError::NotGguf { path, reason }) => Err(EngineError::NotGguf { path, reason }),
    }
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// Name, size and head/tail hash of a file.
pub fn fingerprint(path: &Path) -> Result<ModelFingerprint, EngineError> {
    const MIB: u64 = 1 << 20;
    let io = |e| EngineError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB.min(size) as usize];
    let n = read_up_to(&mut f, &mut buf).map_err(io)?;
    h.update(&buf[..n]);
    if size > MIB {
        f.seek(SeekFrom::Start(size.saturating_sub(MIB).max(MIB)))
            .map_err(io)?;
        let n = read_up_to(&mut f, &mut buf).map_err(io)?;
        h.update(&buf[..n]);
    }
    h.update(size.to_le_bytes());
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(ModelFingerprint {
        file_name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        file_size: size,
        sha256_head_tail: hex,
    })
}

/// Whether kvlab can edit the cache of a model of `architecture` that keeps a recurrent state
/// (`recurrent`: Mamba, RWKV and the hybrids built on them). The rule a GGUF header is judged
/// by before loading; a loaded model is also judged by the layout llama.cpp writes (see
/// [`LoadedModel::check_kv_surgery_supported`]).
pub fn kv_surgery_support(architecture: &str, recurrent: bool) -> Result<(), String> {
    if recurrent {
        return Err(format!(
            "{architecture} keeps a recurrent state (Mamba or RWKV layers), not only a KV cache: KV surgery is not supported for it"
        ));
    }
    Ok(())
}

/// Why an unmapped sliding-window model is refused: llama.cpp wrote a state kvlab cannot read as
/// one cache (a second, sliding-window cache whose layers kvlab cannot place).
fn unknown_layout(architecture: &str, why: &str) -> String {
    format!(
        "{architecture} uses sliding-window attention and llama.cpp keeps its cache in a layout kvlab cannot map to layers ({why}; mapped: Gemma 2 and 3, Cohere 2, gpt-oss): KV surgery is not supported for it yet"
    )
}

impl LoadedModel {
    /// Loads a GGUF file. `progress` gets values in 0..=1; setting `cancel` stops the load.
    pub fn load(
        path: &Path,
        options: &LoadOptions,
        cancel: Option<Arc<AtomicBool>>,
        mut progress: impl FnMut(f32) + Send + 'static,
    ) -> Result<LoadedModel, EngineError> {
        check_gguf_header(path)?;
        if path.to_str().is_none() {
            // llama.cpp takes the path as UTF-8 text; it would fail with no word of why.
            return Err(EngineError::LoadFailed {
                path: path.display().to_string(),
                detail: "the path is not valid UTF-8 (llama.cpp opens files by UTF-8 name): rename the file or its folder".into(),
            });
        }
        let fingerprint = fingerprint(path)?;
        let backend = backend()?;
        let mut params = LlamaModelParams::default();
        if let Some(n) = options.n_gpu_layers {
            params = params.with_n_gpu_layers(n);
        }
        let cancelled = Arc::new(AtomicBool::new(false));
        let cancelled_in_cb = cancelled.clone();
        let params = params.with_progress_callback(move |p| {
            progress(p);
            let stop = cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
            if stop {
                cancelled_in_cb.store(true, Ordering::Relaxed);
            }
            !stop
        });
        log::clear_recent();
        let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| {
            if cancelled.load(Ordering::Relaxed) {
                return EngineError::LoadCancelled;
            }
            let recent = log::recent();
            let detail = if recent.is_empty() {
                format!("{e}; the file may be truncated or of an architecture this llama.cpp does not know")
            } else {
                recent.join("; ")
            };
            EngineError::LoadFailed {
                path: path.display().to_string(),
                detail,
            }
        })?;
        let meta = |k: &str| model.meta_val_str(k).ok();
        let architecture = meta("general.architecture").unwrap_or_else(|| "unknown".into());
        let info = ModelInfo {
            name: meta("general.name"),
            n_layer: model.n_layer(),
            n_head: model.n_head(),
            n_head_kv: model.n_head_kv(),
            n_embd: model.n_embd().max(0) as u32,
            n_ctx_train: model.n_ctx_train(),
            n_vocab: model.n_vocab().max(0) as u32,
            n_params: model.n_params(),
            quantization: meta("general.file_type")
                .and_then(|s| s.parse::<u32>().ok())
                .map(crate::gguf::file_type_name)
                .unwrap_or_else(|| "unknown".into()),
            has_chat_template: model.chat_template(None).is_ok(),
            adds_bos: model.vocab().should_add_bos(),
            architecture,
            sliding_window: None,
            sliding_layers: Vec::new(),
            head_dim: (0, 0),
        };
        let mut loaded = LoadedModel {
            model,
            path: path.to_path_buf(),
            info,
            fingerprint,
            surgery: Ok(()),
        };
        if let Ok(Some(split)) = loaded.sliding_layers() {
            loaded.info.sliding_window = loaded.sliding_window();
            loaded.info.sliding_layers = split.swa_layers().into_iter().map(|l| l as u32).collect();
        }
        let per_head = loaded
            .info
            .n_embd
            .checked_div(loaded.info.n_head)
            .unwrap_or(0);
        let dim = |key: &str| {
            (loaded.model)
                .meta_val_str(&format!("{}.attention.{key}", loaded.info.architecture))
                .ok()
                .and_then(|v| v.trim().parse::<u32>().ok())
                .unwrap_or(per_head)
        };
        loaded.info.head_dim = (dim("key_length"), dim("value_length"));
        loaded.surgery = loaded.judge_kv_surgery();
        Ok(loaded)
    }

    /// The file this model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's metadata.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The file's fingerprint.
    pub fn fingerprint(&self) -> &ModelFingerprint {
        &self.fingerprint
    }

    /// Refuses models whose memory kvlab cannot edit cell by cell; says why.
    pub fn check_kv_surgery_supported(&self) -> Result<(), EngineError> {
        self.surgery.clone().map_err(EngineError::Unsupported)
    }

    /// The verdict of [`Self::check_kv_surgery_supported`], made once at load. A recurrent
    /// state (llama.cpp's own flags) is refused. A sliding-window key alone decides nothing:
    /// llama.cpp gives some architectures a second cache for their sliding layers and others
    /// (llama, for one) a single cache. kvlab maps the two caches of the architectures in
    /// [`super::swa`]; for any other architecture with the key it evaluates one token and reads
    /// the state llama.cpp actually writes, which must parse as one cache.
    fn judge_kv_surgery(&self) -> Result<(), String> {
        let arch = &self.info.architecture;
        kv_surgery_support(arch, self.model.is_recurrent() || self.model.is_hybrid())?;
        let sliding = (self.model)
            .meta_val_str(&format!("{arch}.attention.sliding_window"))
            .is_ok();
        if !sliding || super::swa::is_mapped(arch) {
            return Ok(());
        }
        super::Lab::probe_layout(self).map_err(|e| unknown_layout(arch, &e.to_string()))
    }

    /// Which layers slide, for a model whose llama.cpp cache is iSWA (`None`: one plain cache).
    pub fn sliding_layers(&self) -> Result<Option<crate::engine::kv_state::SwaSplit>, String> {
        let key = |k: &str| {
            self.model
                .meta_val_str(&format!("{}.{k}", self.info.architecture))
                .ok()
        };
        let window = key("attention.sliding_window").and_then(|w| w.trim().parse::<u32>().ok());
        let pattern = key("attention.sliding_window_pattern");
        super::swa::split(
            &self.info.architecture,
            self.info.n_layer,
            window,
            pattern.as_deref(),
        )
    }

    /// The sliding window in tokens, when the model has one.
    pub fn sliding_window(&self) -> Option<u32> {
        self.model
            .meta_val_str(&format!(
                "{}.attention.sliding_window",
                self.info.architecture
            ))
            .ok()
            .and_then(|w| w.trim().parse().ok())
    }

    /// The sliding window in words, for a model whose cache has one (see [`super::swa::describe`]).
    pub fn attention_summary(&self) -> Option<String> {
        let split = self.sliding_layers().ok()??;
        Some(super::swa::describe(self.sliding_window()?, &split))
    }

    /// Whether cache cells carry llama.cpp's cell extension (M-RoPE models).
    pub(crate) fn cells_have_ext(&self) -> bool {
        matches!(
            self.model.rope_type(),
            Some(RopeType::MRope | RopeType::IMRope | RopeType::Vision)
        )
    }

    /// The text of one token (special tokens by name).
    pub fn piece(&self, id: i32) -> String {
        let bytes = self
            .model
            .vocab()
            .token_to_piece(LlamaToken(id), true, None);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The text of a token sequence, decoded as a whole (so multi-byte characters split across
    /// tokens come out right); special tokens are left out.
    pub fn detokenize(&self, ids: &[i32]) -> String {
        let mut bytes = Vec::new();
        let vocab = self.model.vocab();
        for &id in ids {
            bytes.extend(vocab.token_to_piece(LlamaToken(id), false, None));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Tokenizes `text`. `add_bos`: prepend BOS when the model asks for it; `parse_special`:
    /// recognize special-token text such as `<|im_start|>` (chat-template prompts).
    pub fn tokenize(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<TokenPiece>, EngineError> {
        let ids: Vec<i32> = self
            .model
            .vocab()
            .tokenize(text.as_bytes(), add_bos, parse_special)
            .into_iter()
            .map(|t| t.0)
            .collect();
        Ok(ids
            .into_iter()
            .map(|id| TokenPiece {
                id,
                piece: self.piece(id),
            })
            .collect())
    }

    /// Renders a conversation with the model's chat template, through llama.cpp's built-in
    /// template handling (which recognizes common template families; it never executes the
    /// template's code). The result ends with the assistant's opening.
    pub fn render_chat(&self, turns: &[(String, String)]) -> Result<String, EngineError> {
        let template = self.model.chat_template(None).map_err(|_| {
            EngineError::Prompt(
                "this model has no chat template; use the plain-text prompt mode".into(),
            )
        })?;
        let messages = turns
            .iter()
            .map(|(role, content)| LlamaChatMessage::new(role.clone(), content.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::Prompt(format!("a turn cannot be rendered: {e}")))?;
        self.model
            .apply_chat_template(&template, &messages, true)
            .map_err(|e| {
                EngineError::Prompt(format!(
                    "llama.cpp does not recognize this model's chat template ({e}); use plain text"
                ))
            })
    }

    /// The GGUF's Jinja chat template source, if it has one.
    pub fn chat_template_source(&self) -> Option<String> {
        self.model.chat_template(None).ok()?.to_string().ok()
    }

    /// The text of the BOS and EOS tokens (for chat templates).
    pub fn bos_eos_text(&self) -> (String, String) {
        let v = self.model.vocab();
        (self.piece(v.bos().0), self.piece(v.eos().0))
    }

    /// Whether the token ends generation (EOS, EOT, …).
    pub fn is_end_of_generation(&self, id: i32) -> bool {
        self.model.vocab().is_eog(LlamaToken(id))
    }
}
