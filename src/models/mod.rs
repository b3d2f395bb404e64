//! Model families (one module each, following Hugging Face weight names), chosen from
//! config.json's `model_type`.
//!
//! Owner: engine issue (#5).

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Other(String),
}

/// Sets how many CPU threads candle uses. Must run before any tensor work.
pub fn set_threads(n: usize) -> crate::Result<()> {
    if n == 0 {
        return Err(crate::Error::Usage("--threads must be at least 1".into()));
    }
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    Ok(())
}
