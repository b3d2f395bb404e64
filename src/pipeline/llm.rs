//! How an LLM summarizer samples: greedy unless asked otherwise (`--temperature`, `--top-p`,
//! `--seed`). Plain values the command line fills and the LLM engine reads.

use crate::{Error, Result};

/// Sampling settings of an LLM summarizer. The default is greedy (temperature 0), which gives
/// the same summaries on every run; with a temperature, a seed makes them reproducible.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Sampling {
    /// 0 (or none) is greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling: the most likely tokens up to this total probability.
    pub top_p: Option<f64>,
    /// Seed of the sampler; without one a sampled run uses a fixed default seed, so runs are
    /// reproducible unless the seed is changed.
    pub seed: Option<u64>,
}

/// The seed when none is given: sampling stays reproducible by default.
pub const DEFAULT_SEED: u64 = 299_792_458;

impl Sampling {
    /// Whether any sampling flag was given (they apply to LLM summarizers only).
    pub fn is_set(&self) -> bool {
        *self != Sampling::default()
    }

    /// Whether tokens are drawn at random (a temperature above 0).
    pub fn samples(&self) -> bool {
        self.temperature.is_some_and(|t| t > 0.0)
    }

    /// The seed in use.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(DEFAULT_SEED)
    }

    /// Rejects values no sampler takes, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = self.temperature {
            if !(t.is_finite() && t >= 0.0) {
                return Err(Error::Usage(format!(
                    "--temperature {t}: expected 0 (greedy) or more"
                )));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::Usage(format!(
                    "--top-p {p}: expected a probability above 0 and at most 1"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_the_default_and_bad_values_name_their_flag() {
        assert!(!Sampling::default().samples());
        assert!(!Sampling::default().is_set());
        let sampled = Sampling {
            temperature: Some(0.7),
            top_p: Some(0.9),
            seed: None,
        };
        assert!(sampled.samples() && sampled.validate().is_ok());
        assert_eq!(sampled.seed(), DEFAULT_SEED);
        let bad = Sampling {
            top_p: Some(1.5),
            ..Sampling::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--top-p 1.5"));
        let bad = Sampling {
            temperature: Some(-1.0),
            ..Sampling::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--temperature -1"));
    }
}
