//! Renders a model's own Jinja chat template (from its GGUF) the way its authors intended,
//! in a sandbox: no file or network access (minijinja has none), bounded work (fuel) and bounded
//! output size, so a hostile or broken template ends in a clear error instead of a hang.

use std::fmt;

use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;
use thiserror::Error as ThisError;

/// Most output a template may produce.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;
/// Work budget (minijinja instructions) for one rendering.
pub const FUEL: u64 = 2_000_000;

/// Why a template could not be rendered.
#[derive(Debug, ThisError, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// The template ran out of its work budget (an endless or enormous loop).
    #[error("the chat template did too much work (over {FUEL} steps) and was stopped")]
    TooMuchWork,
    /// The template produced more than [`MAX_OUTPUT_BYTES`].
    #[error("the chat template produced more than {} MiB and was stopped", MAX_OUTPUT_BYTES >> 20)]
    TooLarge,
    /// The template raised an error itself or is invalid.
    #[error("the chat template failed: {0}")]
    Failed(String),
}

/// A chat message as templates expect it.
#[derive(Debug, Clone, Serialize)]
pub struct Message<'a> {
    /// `system`, `user`, `assistant`.
    pub role: &'a str,
    /// The text.
    pub content: &'a str,
}

/// A `fmt::Write` sink that stops past the size limit.
struct Bounded {
    out: String,
    overflow: bool,
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.out.len() + s.len() > MAX_OUTPUT_BYTES {
            self.overflow = true;
            return Err(fmt::Error);
        }
        self.out.push_str(s);
        Ok(())
    }
}

/// Renders `template` for `messages`, ending with the assistant's opening
/// (`add_generation_prompt = true`).
pub fn render(
    template: &str,
    messages: &[Message<'_>],
    bos_token: &str,
    eos_token: &str,
) -> Result<String, TemplateError> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(100);
    // Python-style string methods (`.strip()`, `.startswith()`…) that HF templates use.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    // A fixed date keeps renderings reproducible.
    env.add_function("strftime_now", |_fmt: String| -> Value {
        Value::from("01 Jan 2026")
    });
    env.add_template("chat", template)
        .map_err(|e| TemplateError::Failed(e.to_string()))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| TemplateError::Failed(e.to_string()))?;
    let ctx = context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => bos_token,
        eos_token => eos_token,
    };
    let mut sink = Bounded {
        out: String::new(),
        overflow: false,
    };
    match tmpl.render_captured_to(ctx, FmtAdapter(&mut sink)) {
        Ok(_) => Ok(sink.out),
        Err(_) if sink.overflow => Err(TemplateError::TooLarge),
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(TemplateError::TooMuchWork),
        Err(e) => Err(TemplateError::Failed(e.to_string())),
    }
}

/// Lets minijinja's `io::Write` output land in a bounded `fmt::Write`.
struct FmtAdapter<'a>(&'a mut Bounded);

impl std::io::Write for FmtAdapter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let s = std::str::from_utf8(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        fmt::Write::write_str(self.0, s).map_err(|_| std::io::Error::other("output too large"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_default_system_prompt() {
        let out = render(
            CHATML,
            &[Message {
                role: "user",
                content: "Hi",
            }],
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_work() {
        let t = "{{ messages[0].content.strip().upper() }}";
        assert_eq!(
            render(
                t,
                &[Message {
                    role: "user",
                    content: " hi "
                }],
                "",
                ""
            )
            .unwrap(),
            "HI"
        );
    }

    #[test]
    fn endless_work_is_stopped() {
        let t = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        assert_eq!(render(t, &[], "", ""), Err(TemplateError::TooMuchWork));
    }

    #[test]
    fn huge_output_is_stopped() {
        let t = "{% for i in range(20000) %}{{ 'x' * 1000 }}{% endfor %}";
        let e = render(t, &[], "", "").unwrap_err();
        assert!(
            matches!(e, TemplateError::TooLarge | TemplateError::TooMuchWork),
            "{e:?}"
        );
        assert!(e.to_string().contains("stopped"));
    }

    #[test]
    fn raise_exception_is_reported() {
        let t = "{{ raise_exception('roles must alternate') }}";
        let e = render(t, &[], "", "").unwrap_err();
        assert!(e.to_string().contains("roles must alternate"), "{e}");
    }
}
