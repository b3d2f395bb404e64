//! Abbreviations that end in a full stop, and what that full stop means.
//!
//! The lists are ours, gathered from press-release and news usage. Keys are lower case, with the
//! inner dots of multi-part abbreviations kept and spaces removed (`т. е.` -> `т.е`).

/// What a full stop after an abbreviation says about the end of the sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AbbrevKind {
    /// Always followed by what it qualifies (`ул. Ленина`, `т. е.`, `им. Пушкина`): never ends a
    /// sentence.
    Head,
    /// Usually followed by a number (`рис. 5`, `стр. 12`), but also a common word, so it ends a
    /// sentence when no number follows.
    HeadBeforeNumber,
    /// Closes an enumeration or a name (`и т. д.`, `и др.`, `Group-IB Ltd.`): ends a sentence
    /// before a capital or a number.
    Tail,
    /// A unit or magnitude (`5 млн руб.`, `300 тыс.`): ends a sentence before a capital, not
    /// before a number, which continues a compound amount (`5 руб. 50 коп.`).
    Measure,
    /// A one-letter unit after a number (`100 т.`, `10 ч. 30 мин.`), which is a head
    /// abbreviation otherwise (`т. 2`, `ч. 3 ст. 159`, `с. Покровское`).
    Unit,
    /// A year or century marker after a number (`2007 г.`, `XX в.`): ends a sentence before a
    /// capital or a number, unless the sentence so far is only a date (`В 2007 г. Президент...`).
    /// A head abbreviation otherwise (`г. Москва`, `гг. Москва и Казань`).
    Year,
}

/// Places and addresses, references into documents, titles and roles, academic degrees as they
/// stand before a name, connectives (`т. е.`), language names, Latin-script ones.
#[rustfmt::skip]
const HEAD: &[&str] = &[
    "гор", "ул", "пр", "просп", "пер", "пл", "наб", "ш", "б-р", "бул", "д", "корп", "кв", "оф",
    "пос", "пгт", "дер", "обл", "р-н", "респ", "оз", "о", "им", "св", "ст", "ж.д", "мкр", "стр",
    "п", "пп", "подп", "абз", "разд", "прим", "ср", "напр", "тт", "акад", "проф", "доц", "ген",
    "адм", "зам", "нач", "пред", "канд", "докт", "тов", "гр", "г-н", "г-жа", "засл", "нар", "мл",
    "и.о", "вр.и.о", "врио", "ред", "сост", "авт", "к.п.н", "д.п.н", "к.т.н", "д.т.н", "к.э.н",
    "д.э.н", "к.ю.н", "д.ю.н", "к.м.н", "д.м.н", "к.ф.н", "д.ф.н", "к.и.н", "д.и.н", "к.б.н",
    "д.б.н", "к.х.н", "д.х.н", "к.ф.м.н", "д.ф.м.н", "к.с.х.н", "д.с.х.н", "т.е", "т.к", "т.н",
    "т.ч", "т.о", "т.наз", "ок", "прибл", "вкл", "искл", "букв", "англ", "франц", "фр", "нем",
    "лат", "рус", "греч", "исп", "итал", "кит", "араб", "яп", "укр", "бел", "каз", "mr", "mrs",
    "ms", "dr", "prof", "st", "no", "nr", "vs", "e.g", "i.e", "cf", "approx",
];

#[rustfmt::skip]
const HEAD_BEFORE_NUMBER: &[&str] = &[
    "рис", "табл", "илл", "гл", "вып", "изд", "арт", "тел", "моб", "факс", "инв", "рег", "fig",
    "p", "pp", "vol", "tel",
];

#[rustfmt::skip]
const TAIL: &[&str] = &[
    "др", "проч", "т.д", "т.п", "н.э", "до.н.э", "etc", "inc", "ltd", "co", "corp", "jr", "sr",
    "llc",
];

#[rustfmt::skip]
const MEASURE: &[&str] = &[
    "тыс", "млн", "млрд", "трлн", "руб", "коп", "долл", "проц", "чел", "шт", "ед", "экз", "мес",
    "сут", "нед", "мин", "сек", "кг", "мг", "мм", "км", "кв.м", "куб.м", "кв.км",
];

const UNIT: &[&str] = &["ч", "м", "см", "т", "л", "с", "р"];

const YEAR: &[&str] = &["г", "гг", "в", "вв"];

/// Multi-letter initials of first names (`Дж. Смит`); single capitals are handled apart.
const INITIALS: &[&str] = &["дж", "вл", "вс", "ал", "конст"];

/// The kind of the abbreviation `key` (lower case, dots inside kept), if it is one.
///
/// Unit and year abbreviations are also head ones (`см. выше`, `г. Москва`): the caller tells
/// them apart by looking at what stands before them.
pub(crate) fn kind(key: &str) -> Option<AbbrevKind> {
    if YEAR.contains(&key) {
        Some(AbbrevKind::Year)
    } else if UNIT.contains(&key) {
        Some(AbbrevKind::Unit)
    } else if MEASURE.contains(&key) {
        Some(AbbrevKind::Measure)
    } else if TAIL.contains(&key) {
        Some(AbbrevKind::Tail)
    } else if HEAD_BEFORE_NUMBER.contains(&key) {
        Some(AbbrevKind::HeadBeforeNumber)
    } else if HEAD.contains(&key) {
        Some(AbbrevKind::Head)
    } else {
        None
    }
}

/// Whether `word` (lower case) is a unit or magnitude, abbreviated or not, so that a number
/// before it continues an amount (`5 руб. 50 коп.`).
pub(crate) fn is_unit_word(word: &str) -> bool {
    const UNIT_STEMS: &[&str] = &[
        "руб", "коп", "тыс", "млн", "млрд", "мин", "сек", "час", "долл",
    ];
    matches!(kind(word), Some(AbbrevKind::Measure | AbbrevKind::Unit))
        || UNIT_STEMS.iter().any(|stem| word.starts_with(stem))
}

/// Whether `text` speaks of an address, where `пр.` is `проспект`.
pub(crate) fn mentions_address(text: &str) -> bool {
    const ADDRESS_WORDS: &[&str] = &[
        "ул.",
        "пер.",
        "пл.",
        "наб.",
        "просп.",
        "ш.",
        "улиц",
        "переул",
        "площад",
        "пересечени",
        "адрес",
        "проспект",
    ];
    let text = text.to_lowercase();
    ADDRESS_WORDS.iter().any(|w| text.contains(w))
}

/// Whether `word` (any case) is the initial of a first name: a single capital, or `Дж`.
pub(crate) fn is_initial(word: &str) -> bool {
    let mut chars = word.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => c.is_uppercase(),
        (Some(c), Some(_)) => c.is_uppercase() && INITIALS.contains(&word.to_lowercase().as_str()),
        _ => false,
    }
}

/// Prepositions and words that, with numbers and months, make up a date adverbial such as
/// `В 2007 г.` or `С 1 января по 31 марта 2024 г.`: a fragment made only of them is no sentence.
#[rustfmt::skip]
const DATE_WORDS: &[&str] = &[
    "в", "во", "с", "со", "к", "ко", "до", "по", "на", "от", "за", "около", "после", "перед",
    "между", "и", "или", "течение", "конце", "начале", "середине", "концу", "началу", "период",
    "г", "гг", "вв", "год", "года", "году", "годы", "годов", "годах", "-", "–", "—",
];

#[rustfmt::skip]
const MONTHS: &[&str] = &[
    "январ", "феврал", "март", "апрел", "ма", "июн", "июл", "август", "сентябр", "октябр", "ноябр",
    "декабр",
];

/// Whether `word` (lower case, no dot) belongs in a date adverbial: a number, a month, a Roman
/// numeral or one of [`DATE_WORDS`].
pub(crate) fn is_date_word(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit())
        || is_roman(&word.to_uppercase())
        || DATE_WORDS.contains(&word)
        || MONTHS.iter().any(|stem| is_month_form(word, stem))
}

fn is_month_form(word: &str, stem: &str) -> bool {
    word.strip_prefix(stem)
        .is_some_and(|ending| ["", "ь", "я", "е", "й", "а", "ю"].contains(&ending))
}

/// Whether `word` is a Roman numeral in Latin capitals (`IV`, `XXI`).
pub(crate) fn is_roman(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| "IVXLCDM".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_known_abbreviations() {
        assert_eq!(kind("ул"), Some(AbbrevKind::Head));
        assert_eq!(kind("т.е"), Some(AbbrevKind::Head));
        assert_eq!(kind("т.д"), Some(AbbrevKind::Tail));
        assert_eq!(kind("г"), Some(AbbrevKind::Year));
        assert_eq!(kind("т"), Some(AbbrevKind::Unit));
        assert_eq!(kind("руб"), Some(AbbrevKind::Measure));
        assert_eq!(kind("рис"), Some(AbbrevKind::HeadBeforeNumber));
        assert_eq!(kind("москва"), None);
    }

    #[test]
    fn initials_and_dates() {
        assert!(is_initial("Ю") && is_initial("Дж") && !is_initial("ю") && !is_initial("Шток"));
        assert!(is_date_word("июля") && is_date_word("2007") && is_date_word("1990-х"));
        assert!(is_date_word("май") && !is_date_word("мама") && !is_date_word("москва"));
    }
}
