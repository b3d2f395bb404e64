//! Russian text into translatable segments: paragraphs, sentences, over-long sentences split.
//!
//! Owner: segmentation issue (#6).
