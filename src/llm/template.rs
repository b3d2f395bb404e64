//! Chat templates: the Jinja source a GGUF carries in `tokenizer.chat_template`, rendered with
//! minijinja the way transformers renders it (`trim_blocks`, `lstrip_blocks`, loop controls,
//! `raise_exception`, Python string methods through minijinja-contrib's pycompat), so each
//! instruction model gets its own turn format without us knowing it.

use std::path::PathBuf;

use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use super::LlmError;

/// One chat turn: `role` is "system", "user" or "assistant".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template with the special-token texts it may refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    path: PathBuf,
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source`; `path` names the model file in errors.
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        path: PathBuf,
    ) -> Result<Self, LlmError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| LlmError::Template {
                path: path.clone(),
                reason: format!("does not compile: {e}"),
            })?;
        Ok(Self {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            path,
        })
    }

    /// The prompt text for `messages`; `add_generation_prompt` opens the assistant's turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, LlmError> {
        let template = self.env.get_template(NAME).map_err(|e| self.error(e))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| self.error(e))
    }

    fn error(&self, e: minijinja::Error) -> LlmError {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            reason.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        LlmError::Template {
            path: self.path.clone(),
            reason,
        }
    }
}
