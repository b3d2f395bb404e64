//! Release -> segments -> translation -> summary -> output record.
//!
//! Owner: batch shell issue (#2) and summaries issue (#7).
