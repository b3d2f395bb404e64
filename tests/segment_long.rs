//! A sentence far over the model's limit is cut into pieces that each fit, and the pieces come
//! back whole, in order, with nothing missing. Counted with a stand-in tokenizer always, and
//! with the real rut5 tokenizer from ../shared/assets (an ignored test `.ci/run` runs when the
//! files are present).

mod batch_support;

use batch_support::assets;
use mtsum::text::{self, BlockKind};

/// One sentence of about 1,000 tokens: clauses joined by commas, conjunctions, semicolons,
/// colons, dashes and a quotation, as in the long sentences of official releases.
fn long_sentence() -> String {
    let clauses = [
        "сотрудники Главного управления по вопросам миграции МВД России совместно с коллегами из территориальных органов провели масштабную проверку",
        "которая охватила более 1 200 объектов в 45 субъектах Российской Федерации",
        "в том числе строительные площадки, рынки, склады и общежития",
        "а также предприятия общественного питания и бытового обслуживания населения",
        "при этом особое внимание уделялось соблюдению порядка привлечения иностранных граждан к трудовой деятельности",
    ];
    let mut sentence = String::from("В период с 1 марта по 30 апреля 2024 г.");
    for round in 0..9 {
        for (i, clause) in clauses.iter().enumerate() {
            let joint = match (round + i) % 5 {
                0 => ", ",
                1 => "; ",
                2 => " — ",
                3 => ": ",
                _ => ", и ",
            };
            sentence.push_str(joint);
            sentence.push_str(clause);
        }
        sentence.push_str(&format!(", «этап {} завершён. Итоги подведены»", round + 1));
    }
    sentence.push('.');
    sentence
}

/// A stand-in for a subword tokenizer: about one token per four characters of each word, plus
/// the end-of-sentence token.
fn stand_in_count(s: &str) -> usize {
    s.split_whitespace()
        .map(|w| w.chars().count().div_ceil(4))
        .sum::<usize>()
        + 1
}

fn check_split(count: &dyn Fn(&str) -> usize, max_tokens: usize) {
    let sentence = long_sentence();
    let total = count(&sentence);
    assert!(total >= 1_000, "the test sentence has only {total} tokens");

    let pieces = text::split_long(&sentence, max_tokens, count);
    assert!(
        pieces.len() >= total / max_tokens,
        "{} pieces",
        pieces.len()
    );
    for piece in &pieces {
        let n = count(&piece.text);
        assert!(n <= max_tokens, "a piece of {n} tokens: {:?}", piece.text);
        assert!(!piece.text.is_empty() && piece.text == piece.text.trim());
    }
    let texts: Vec<&str> = pieces.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(
        text::join_pieces(&pieces, &texts),
        sentence,
        "pieces do not join back"
    );

    // The same through `prepare`, as the pipeline uses it: the sentence is marked as split,
    // and translating each piece and joining keeps their order.
    let doc = format!("Итоги проверки\n\n{sentence} Нарушители привлечены к ответственности.");
    let blocks = text::prepare(&text::paragraphs(&doc), max_tokens, count);
    assert_eq!(blocks[0].kind, BlockKind::Heading);
    let [long, short] = blocks[1].sentences.as_slice() else {
        panic!("expected two sentences, got {:?}", blocks[1].sentences);
    };
    assert_eq!(long.original, sentence);
    assert!(long.is_split() && !short.is_split());
    let tagged: Vec<String> = (0..long.pieces.len()).map(|i| format!("<{i}>")).collect();
    assert_eq!(long.join(&tagged), tagged.join(" "));
    println!(
        "{total} tokens -> {} pieces of at most {max_tokens}",
        pieces.len()
    );
}

#[test]
fn a_1000_token_sentence_is_split_into_pieces_that_fit_and_join_back() {
    check_split(&stand_in_count, 100);
}

#[test]
#[ignore = "needs the real model files in ../shared/assets; .ci/run runs it when present"]
fn the_same_with_the_real_rut5_tokenizer() {
    let file = assets::model("rut5_base_sum_gazeta").join("tokenizer.json");
    let mut tokenizer = tokenizers::Tokenizer::from_file(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    tokenizer.with_truncation(None).expect("truncation off");
    tokenizer.with_padding(None);
    let count = |s: &str| tokenizer.encode(s, true).expect("encodes").len();
    check_split(&count, 200);
}
