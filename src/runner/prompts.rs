//! Turning a spec's variants into token sequences: the text the model sees (plain, llama.cpp's
//! built-in chat renderer or the model's own Jinja template), its tokens, and the needle span
//! where the variants' tokens differ. Kept apart from [`super::plan`] because it is the one step
//! of planning that needs the model.

use crate::engine::{EngineError, LoadedModel, TokenPiece};
use crate::experiment::jinja;
use crate::experiment::needle::{check_span_in_cache, differing_span};
use crate::experiment::spec::{ExperimentSpec, PromptMode, Span, SpecError};

use super::RunError;

/// A variant's prompt, rendered and tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedPrompt {
    /// The variant's name.
    pub name: String,
    /// The rendered text.
    pub text: String,
    /// Its tokens.
    pub tokens: Vec<TokenPiece>,
}

impl PreparedPrompt {
    pub(super) fn ids(&self) -> Vec<i32> {
        self.tokens.iter().map(|t| t.id).collect()
    }

    /// The token fed after the intervention: the prompt's last (a plan's prompts have at
    /// least 2 tokens).
    pub(super) fn last_id(&self) -> i32 {
        self.tokens[self.tokens.len() - 1].id
    }

    /// The position of the last token; the cache holds positions `0..last_pos()`.
    pub(super) fn last_pos(&self) -> i32 {
        self.tokens.len() as i32 - 1
    }
}

/// Every variant's prompt, rendered and tokenized, the needle span, and warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// One per variant, in spec order.
    pub prompts: Vec<PreparedPrompt>,
    /// The needle span (given or found).
    pub span: Span,
    /// What the user should know about the rendering.
    pub warnings: Vec<String>,
}

/// Renders the conversation of one variant with the model's Jinja template.
fn render_jinja(model: &LoadedModel, turns: &[(String, String)]) -> Result<String, RunError> {
    let template = model.chat_template_source().ok_or_else(|| {
        SpecError::Generation(
            "this model has no chat template; use the plain-text prompt mode".into(),
        )
    })?;
    let messages: Vec<jinja::Message<'_>> = turns
        .iter()
        .map(|(role, content)| jinja::Message { role, content })
        .collect();
    let (bos, eos) = model.bos_eos_text();
    jinja::render(&template, &messages, &bos, &eos)
        .map_err(|e| RunError::Engine(EngineError::Prompt(e.to_string())))
}

/// The warning given when the two renderers disagree about a conversation.
fn renderers_disagree(builtin: &str, jinja: &str) -> String {
    format!(
        "llama.cpp's built-in renderer and the model's Jinja template render this conversation \
         differently ({} vs {} characters{}); kvlab uses the Jinja rendering, as the model's \
         authors intended",
        builtin.len(),
        jinja.len(),
        if jinja.contains("system") && !builtin.contains("system") {
            ", the template adds a default system prompt"
        } else {
            ""
        }
    )
}

/// Renders and tokenizes every variant's prompt and finds the needle span.
pub fn prepare_prompts(model: &LoadedModel, spec: &ExperimentSpec) -> Result<Prepared, RunError> {
    spec.validate()?;
    let mut prompts = Vec::new();
    let mut warnings = Vec::new();
    for v in &spec.variants {
        let turns = spec.filled_turns(v);
        let (text, parse_special) = match spec.prompt.mode {
            PromptMode::Plain => (spec.plain_prompt(v), false),
            PromptMode::ChatBuiltin => (model.render_chat(&turns)?, true),
            PromptMode::ChatTemplate => {
                let text = render_jinja(model, &turns)?;
                if warnings.is_empty()
                    && let Ok(builtin) = model.render_chat(&turns)
                    && builtin != text
                {
                    warnings.push(renderers_disagree(&builtin, &text));
                }
                (text, true)
            }
        };
        let tokens = model.tokenize(&text, true, parse_special)?;
        if tokens.len() < 2 {
            return Err(SpecError::Span(format!(
                "the prompt of {} has {} token(s); it needs at least 2",
                v.name,
                tokens.len()
            ))
            .into());
        }
        prompts.push(PreparedPrompt {
            name: v.name.clone(),
            text,
            tokens,
        });
    }
    let span = match spec.needle_span {
        Some(s) => s,
        None => {
            let ids: Vec<Vec<i32>> = prompts.iter().map(|p| p.ids()).collect();
            let refs: Vec<&[i32]> = ids.iter().map(|v| v.as_slice()).collect();
            differing_span(&refs).ok_or_else(|| {
                SpecError::Span(
                    "the variants tokenize identically, so there is no needle to find: give \
                     the variants different needle texts or set the span explicitly"
                        .into(),
                )
            })?
        }
    };
    for p in &prompts {
        check_span_in_cache(
            span,
            p.tokens.len(),
            &format!("the needle span (in {})", p.name),
        )?;
    }
    Ok(Prepared {
        prompts,
        span,
        warnings,
    })
}
