//! The prompt a user writes: turns with a `{needle}` placeholder, how they are rendered, and
//! the variants that fill the placeholder.

use serde::{Deserialize, Serialize};

use super::{ExperimentSpec, NEEDLE_PLACEHOLDER};

/// How the turns become the prompt text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptMode {
    /// Role labels and blank lines, no chat template (the seed's way):
    /// `User: …\n\nAssistant: …\n\nAssistant:`.
    #[default]
    Plain,
    /// The model's own Jinja chat template from the GGUF, rendered in a sandbox (with its
    /// default system prompt, if it has one), as the model's authors intended.
    ChatTemplate,
    /// llama.cpp's built-in renderer for the template's family (it recognizes common families
    /// and formats them itself; it may leave out a template's default system prompt).
    ChatBuiltin,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// `user`, `assistant` or `system`.
    pub role: String,
    /// The text; may contain `{needle}`.
    pub content: String,
}

/// The prompt: turns and how to render them. Generation continues as the assistant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// Plain text or chat template.
    pub mode: PromptMode,
    /// The conversation so far.
    pub turns: Vec<Turn>,
}

impl Default for PromptSpec {
    fn default() -> Self {
        PromptSpec {
            mode: PromptMode::Plain,
            turns: vec![Turn {
                role: "user".into(),
                content: "I am flying to {needle} city.".into(),
            }],
        }
    }
}

/// One filling of the needle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Short name (column header), e.g. `SF`.
    pub name: String,
    /// The text put in place of `{needle}`.
    pub needle: String,
    /// Answers this variant's prompt should get, e.g. `" Here are some historical places to
    /// visit in San Francisco:"`; scored teacher-forced under every condition. Tokenized as
    /// written: a leading space matters after a plain `Assistant:` label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected: Vec<String>,
    /// Words that mark this variant in generated text (counted case-insensitively).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
}

/// Turns a role name into the plain-text label (`user` → `User`).
fn role_label(role: &str) -> String {
    let mut c = role.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

impl ExperimentSpec {
    /// The turns with the needle filled in for one variant.
    pub fn filled_turns(&self, variant: &Variant) -> Vec<(String, String)> {
        self.prompt
            .turns
            .iter()
            .map(|t| {
                (
                    t.role.clone(),
                    t.content.replace(NEEDLE_PLACEHOLDER, &variant.needle),
                )
            })
            .collect()
    }

    /// The plain-text prompt for one variant: `Role: content` turns separated by blank lines,
    /// then the assistant's label, which generation continues.
    pub fn plain_prompt(&self, variant: &Variant) -> String {
        let mut parts: Vec<String> = self
            .filled_turns(variant)
            .into_iter()
            .map(|(role, content)| format!("{}: {}", role_label(&role), content))
            .collect();
        parts.push(format!("{}:", role_label("assistant")));
        parts.join("\n\n")
    }
}
