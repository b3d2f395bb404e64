//! The real rut5_base_sum_gazeta config.json from `../shared/assets` (never committed; an
//! ignored test that `.ci/run` runs when the files are present, see `batch_support::assets`):
//! no generation_config.json, decoder start 2, no banned ids, an untied output layer.

mod batch_support;

use batch_support::assets;
use mtsum::models::{ModelConfig, ModelType};

#[test]
#[ignore = "needs the real model files in ../shared/assets; .ci/run runs it when present"]
fn real_rut5_config_gives_its_special_tokens() {
    let cfg = ModelConfig::read(&assets::model("rut5_base_sum_gazeta")).unwrap();
    assert_eq!(cfg.model_type, ModelType::T5);
    let special = cfg.special_tokens().unwrap();
    assert_eq!((special.decoder_start, special.eos, special.pad), (2, 1, 0));
    assert!(special.banned.is_empty());
    assert_eq!(
        cfg.config.opt_bool("tie_word_embeddings").unwrap(),
        Some(false)
    );
}
