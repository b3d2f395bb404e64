//! `--threads N` reaches candle: its kernels read their thread count from the environment that
//! `set_threads` writes, and rayon's global pool gets the same size. Its own test binary, since
//! the setting is process-wide.

#[test]
fn set_threads_sets_candles_thread_count() {
    mtsum::models::set_threads(3).unwrap();
    assert_eq!(candle_core::utils::get_num_threads(), 3);
    assert_eq!(rayon::current_num_threads(), 3);
    assert!(mtsum::models::set_threads(0).is_err());
    assert_eq!(candle_core::utils::get_num_threads(), 3);
}
