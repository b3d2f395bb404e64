//! The real model files in `shared/assets` (never committed): where they are, in one place.
//!
//! Tests that need them are `#[ignore = ...]`d with the reason, so a plain `cargo test` counts
//! them as ignored instead of passing them without checking anything; `.ci/run` runs them with
//! `--ignored` whenever the assets are present. Run on purpose without the assets, they fail
//! with a message saying what is missing, never pass.

use std::path::PathBuf;

/// The reason every asset test gives to `#[ignore]`.
pub const NEEDS_ASSETS: &str =
    "needs the real model files in ../shared/assets; .ci/run runs it when they are present";

/// `shared/assets` beside the checkout or beside a folder above it (git worktrees sit one
/// level deeper), if any.
pub fn find() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    root.ancestors()
        .skip(1)
        .map(|dir| dir.join("shared/assets"))
        .find(|dir| dir.is_dir())
}

/// The folder of one asset model (`rut5_base_sum_gazeta`, `opus-mt-ru-en`); a test that asks
/// for it fails, naming what is missing, when it is absent.
pub fn model(name: &str) -> PathBuf {
    let Some(assets) = find() else {
        panic!(
            "this test {NEEDS_ASSETS}, and no shared/assets folder was found above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    };
    let dir = assets.join(name);
    assert!(
        dir.is_dir(),
        "{} is missing: this test needs the real {name} files",
        dir.display()
    );
    dir
}
