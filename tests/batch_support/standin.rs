//! A model stand-in for the batch shell's tests: a `TextGenerator` that "translates" by
//! transliterating Cyrillic to Latin and "summarizes" by taking the lead sentence. It lives
//! in tests only, so the CLI can never reach it. Tokens are words plus the end token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mtsum::generate::{Generated, GenerationOverrides, ModelInfo};
use mtsum::pipeline::TextGenerator;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Translator,
    Summarizer,
}

/// When the stand-in produces a degenerate loop instead of its usual output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loop {
    #[default]
    Never,
    Always,
    /// Loops unless the call bans repeated n-grams (the guard's stricter retry).
    UnlessStrict,
}

pub struct StandIn {
    role: Role,
    /// Degenerate output on demand, to exercise the guards.
    pub looping: Loop,
    info: ModelInfo,
    max_input_tokens: usize,
    /// Inputs containing this text make `generate` fail (a release the model cannot handle).
    pub fail_on: Option<String>,
    /// Sleep per `generate` call (for the kill test).
    pub delay: Duration,
    /// Every input `generate` was given, in order.
    pub seen: Mutex<Vec<String>>,
    pub calls: AtomicUsize,
}

impl StandIn {
    pub fn new(role: Role, max_input_tokens: usize) -> Self {
        let name = match role {
            Role::Translator => "standin/translit-ru-en",
            Role::Summarizer => "standin/lead-sentence",
        };
        StandIn {
            role,
            looping: Loop::Never,
            info: ModelInfo {
                repo: name.into(),
                revision: None,
                commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
                family: "standin".into(),
                dtype: "f32".into(),
                device: "cpu".into(),
                llm: None,
            },
            max_input_tokens,
            fail_on: None,
            delay: Duration::ZERO,
            seen: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
        }
    }

    pub fn translator() -> Self {
        Self::new(Role::Translator, 40)
    }

    pub fn summarizer() -> Self {
        Self::new(Role::Summarizer, 300)
    }

    pub fn failing_on(mut self, marker: &str) -> Self {
        self.fail_on = Some(marker.into());
        self
    }

    pub fn looping(mut self, looping: Loop) -> Self {
        self.looping = looping;
        self
    }

    pub fn inputs_seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn respond(&self, input: &str) -> String {
        match self.role {
            Role::Translator => transliterate(input),
            Role::Summarizer => {
                let first = input.lines().next().unwrap_or_default();
                first
                    .split_whitespace()
                    .take(25)
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }
    }
}

impl StandIn {
    /// The loop users of seq2seq tools report: one phrase over and over, in the output language.
    fn degenerate(&self) -> String {
        match self.role {
            Role::Translator => "the police said that ".repeat(8),
            Role::Summarizer => "полиция сообщила что ".repeat(8),
        }
    }
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

impl TextGenerator for StandIn {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn count_tokens(&self, text: &str) -> mtsum::Result<usize> {
        Ok(words(text) + 1)
    }

    fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }

    fn settings(&self, overrides: &GenerationOverrides) -> serde_json::Value {
        json!({ "num_beams": overrides.num_beams.unwrap_or(1), "role": format!("{:?}", self.role) })
    }

    fn generate(
        &self,
        inputs: &[String],
        overrides: &GenerationOverrides,
        progress: &dyn Fn(usize, usize),
    ) -> mtsum::Result<Vec<Generated>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        self.seen.lock().unwrap().extend(inputs.iter().cloned());
        let mut out = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            assert!(
                words(input) < self.max_input_tokens,
                "the pipeline sent {} tokens to a model that takes {}",
                words(input) + 1,
                self.max_input_tokens
            );
            if let Some(marker) = &self.fail_on {
                if input.contains(marker.as_str()) {
                    return Err(mtsum::Error::Generation(format!(
                        "{}: cannot handle {marker:?}",
                        self.info.repo
                    )));
                }
            }
            let text = match (self.looping, overrides.no_repeat_ngram_size) {
                (Loop::Always, _) | (Loop::UnlessStrict, None) => self.degenerate(),
                _ => self.respond(input),
            };
            out.push(Generated {
                output_tokens: words(&text) + 1,
                input_tokens: words(input) + 1,
                text,
            });
            progress(i + 1, inputs.len());
        }
        Ok(out)
    }
}

/// Russian letters to Latin (a simplified GOST 7.79 system B), everything else kept.
pub fn transliterate(text: &str) -> String {
    text.chars()
        .map(|c| {
            let lower = c.to_lowercase().next().unwrap_or(c);
            let latin = match lower {
                'а' => "a",
                'б' => "b",
                'в' => "v",
                'г' => "g",
                'д' => "d",
                'е' => "e",
                'ё' => "yo",
                'ж' => "zh",
                'з' => "z",
                'и' => "i",
                'й' => "j",
                'к' => "k",
                'л' => "l",
                'м' => "m",
                'н' => "n",
                'о' => "o",
                'п' => "p",
                'р' => "r",
                'с' => "s",
                'т' => "t",
                'у' => "u",
                'ф' => "f",
                'х' => "x",
                'ц' => "cz",
                'ч' => "ch",
                'ш' => "sh",
                'щ' => "shh",
                'ъ' => "",
                'ы' => "y",
                'ь' => "",
                'э' => "e",
                'ю' => "yu",
                'я' => "ya",
                _ => return c.to_string(),
            };
            if c.is_uppercase() {
                let mut upper = latin.chars();
                upper
                    .next()
                    .map(|f| f.to_uppercase().chain(upper).collect())
                    .unwrap_or_default()
            } else {
                latin.to_string()
            }
        })
        .collect()
}
