//! Plain text, Markdown and HTML into blocks (headings, paragraphs, list items) and a title.
//!
//! Plain text goes through the segmenter's `text::paragraphs` (its rules for one-paragraph-a-
//! line releases, headings and list markers). Markdown files go through a CommonMark parser,
//! so emphasis, links and code come out as the reader sees them; HTML through html5ever, with
//! the page's title and the numbering of ordered lists kept.

use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
use scraper::node::Node;
use scraper::{ElementRef, Html, Selector};

use super::release::{Block, BlockKind};
use crate::text::{self, collapse_spaces};

/// Elements whose content is never part of the release: page chrome and code.
const DROPPED: &[&str] = &[
    "script", "style", "nav", "header", "footer", "noscript", "template", "aside", "form",
    "button", "select", "svg", "iframe", "object", "head",
];

/// Elements whose whole text is one paragraph.
const PARAGRAPHS: &[&str] = &[
    "p",
    "blockquote",
    "pre",
    "figcaption",
    "dt",
    "dd",
    "td",
    "th",
    "caption",
    "address",
];

/// A release body: an optional title and the blocks after it.
#[derive(Debug, Default, PartialEq)]
pub struct Body {
    pub title: Option<String>,
    pub blocks: Vec<Block>,
}

/// Plain text, by the segmenter's rules; a heading that opens the text is the title.
pub fn plain(text: &str) -> Body {
    let mut blocks = text::paragraphs(text);
    let title = match blocks.first() {
        Some(b) if b.kind == BlockKind::Heading && blocks.len() > 1 => Some(blocks.remove(0).text),
        _ => None,
    };
    Body { title, blocks }
}

fn block(kind: BlockKind, marker: Option<String>, text: &str) -> Block {
    Block {
        kind,
        marker,
        text: text.to_string(),
    }
}

/// Markdown (CommonMark): headings, paragraphs and list items; inline markup reduced to its
/// text; code and raw HTML dropped. The first level-1 heading is the title.
pub fn markdown(text: &str) -> Body {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    let mut lists: Vec<Option<u64>> = Vec::new();
    let mut in_code = false;
    for event in Parser::new(text) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                let marker = (level == HeadingLevel::H1).then(|| "#".to_string());
                open_block(
                    &mut blocks,
                    &mut current,
                    block(BlockKind::Heading, marker, ""),
                );
            }
            Event::Start(Tag::Paragraph) if current.is_none() => {
                current = Some(block(BlockKind::Paragraph, None, ""));
            }
            Event::Start(Tag::List(start)) => lists.push(start),
            Event::End(TagEnd::List(_)) => {
                lists.pop();
            }
            Event::Start(Tag::Item) => {
                let marker = match lists.last_mut() {
                    Some(Some(n)) => {
                        *n += 1;
                        format!("{}.", *n - 1)
                    }
                    _ => "-".to_string(),
                };
                let item = block(BlockKind::ListItem, Some(marker), "");
                open_block(&mut blocks, &mut current, item);
            }
            Event::Start(Tag::CodeBlock(_)) => in_code = true,
            Event::End(TagEnd::CodeBlock) => in_code = false,
            Event::End(TagEnd::Heading(_) | TagEnd::Paragraph | TagEnd::Item) => {
                close_block(&mut blocks, &mut current);
            }
            Event::Text(t) | Event::Code(t) if !in_code => {
                if let Some(block) = current.as_mut() {
                    block.text.push_str(&t);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some(block) = current.as_mut() {
                    block.text.push(' ');
                }
            }
            _ => {}
        }
    }
    close_block(&mut blocks, &mut current);
    title_from_first_h1(blocks)
}

fn open_block(blocks: &mut Vec<Block>, current: &mut Option<Block>, block: Block) {
    close_block(blocks, current);
    *current = Some(block);
}

fn close_block(blocks: &mut Vec<Block>, current: &mut Option<Block>) {
    if let Some(mut block) = current.take() {
        block.text = collapse_spaces(&block.text);
        if !block.text.is_empty() {
            blocks.push(block);
        }
    }
}

/// Takes the first heading as the title when it is the first block and marked level 1
/// (marker `#`), then clears the heading markers.
fn title_from_first_h1(mut blocks: Vec<Block>) -> Body {
    let title = match blocks.first() {
        Some(b) if b.kind == BlockKind::Heading && b.marker.as_deref() == Some("#") => {
            Some(blocks.remove(0).text)
        }
        _ => None,
    };
    titled(title, blocks)
}

/// The body of `blocks` under `title`, with the level-1 heading marks (`#`, set while parsing
/// to find the title) cleared.
fn titled(title: Option<String>, mut blocks: Vec<Block>) -> Body {
    for block in blocks.iter_mut().filter(|b| b.kind == BlockKind::Heading) {
        block.marker = None;
    }
    Body { title, blocks }
}

/// HTML through a real parser (html5ever): headings, paragraphs and list items of the page,
/// without its script, style, nav, header, footer and other chrome. The title is the first
/// `h1` outside the chrome, else the document's `<title>`.
pub fn html(text: &str) -> Body {
    let document = Html::parse_document(text);
    let mut walker = HtmlWalker::default();
    walker.walk(*document.root_element());
    walker.flush_loose();
    let mut blocks = walker.blocks;
    let first_h1 = blocks
        .iter()
        .position(|b| b.kind == BlockKind::Heading && b.marker.as_deref() == Some("#"));
    let title = match first_h1 {
        Some(i) => Some(blocks.remove(i).text),
        None => document_title(&document),
    };
    titled(title, blocks)
}

fn document_title(document: &Html) -> Option<String> {
    let selector = Selector::parse("title").expect("a valid selector");
    let title = collapse_spaces(
        &document
            .select(&selector)
            .next()?
            .text()
            .collect::<String>(),
    );
    (!title.is_empty()).then_some(title)
}

type NodeRef<'a> = ego_tree::NodeRef<'a, Node>;

#[derive(Default)]
struct HtmlWalker {
    blocks: Vec<Block>,
    /// Text met directly inside containers (a `div` with bare text), made a paragraph at the
    /// next block boundary.
    loose: String,
    /// Numbering of the enclosing lists: Some(next number) for `ol`, None for `ul`.
    lists: Vec<Option<u64>>,
}

impl HtmlWalker {
    fn walk(&mut self, node: NodeRef) {
        for child in node.children() {
            match child.value() {
                Node::Text(t) => self.loose.push_str(t),
                Node::Element(el) => self.element(child, el.name()),
                _ => {}
            }
        }
    }

    fn element(&mut self, node: NodeRef, name: &str) {
        if DROPPED.contains(&name) {
            return;
        }
        match name {
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                let marker = (name == "h1").then(|| "#".to_string());
                self.push(BlockKind::Heading, marker, node);
            }
            "li" => {
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        *n += 1;
                        format!("{}.", *n - 1)
                    }
                    _ => "-".to_string(),
                };
                self.push(BlockKind::ListItem, Some(marker), node);
                for nested in node.children().filter(|c| is_list(*c)) {
                    self.element(nested, element_name(nested).unwrap_or_default());
                }
            }
            "ol" | "ul" => {
                let start = ElementRef::wrap(node)
                    .and_then(|e| e.attr("start"))
                    .and_then(|s| s.parse().ok());
                self.lists.push((name == "ol").then(|| start.unwrap_or(1)));
                self.flush_loose();
                self.walk(node);
                self.flush_loose();
                self.lists.pop();
            }
            "br" => self.loose.push(' '),
            _ if PARAGRAPHS.contains(&name) => self.push(BlockKind::Paragraph, None, node),
            _ if is_inline(name) => self.walk(node),
            _ => {
                self.flush_loose();
                self.walk(node);
                self.flush_loose();
            }
        }
    }

    fn push(&mut self, kind: BlockKind, marker: Option<String>, node: NodeRef) {
        self.flush_loose();
        let mut text = String::new();
        text_of(node, &mut text);
        let text = collapse_spaces(&text);
        if !text.is_empty() {
            self.blocks.push(block(kind, marker, &text));
        }
    }

    fn flush_loose(&mut self) {
        let text = collapse_spaces(&std::mem::take(&mut self.loose));
        if !text.is_empty() {
            self.blocks.push(block(BlockKind::Paragraph, None, &text));
        }
    }
}

/// The text under `node`, without dropped elements and nested lists.
fn text_of(node: NodeRef, out: &mut String) {
    for child in node.children() {
        match child.value() {
            Node::Text(t) => out.push_str(t),
            Node::Element(el) if el.name() == "br" => out.push(' '),
            Node::Element(el) if DROPPED.contains(&el.name()) || is_list(child) => {}
            Node::Element(el) => {
                let block = !is_inline(el.name());
                if block {
                    out.push(' ');
                }
                text_of(child, out);
                if block {
                    out.push(' ');
                }
            }
            _ => {}
        }
    }
}

fn element_name<'a>(node: NodeRef<'a>) -> Option<&'a str> {
    match node.value() {
        Node::Element(el) => Some(el.name()),
        _ => None,
    }
}

fn is_list(node: NodeRef) -> bool {
    matches!(element_name(node), Some("ol" | "ul"))
}

fn is_inline(name: &str) -> bool {
    matches!(
        name,
        "a" | "abbr"
            | "b"
            | "bdi"
            | "bdo"
            | "cite"
            | "code"
            | "data"
            | "dfn"
            | "em"
            | "i"
            | "kbd"
            | "mark"
            | "q"
            | "s"
            | "samp"
            | "small"
            | "span"
            | "strong"
            | "sub"
            | "sup"
            | "time"
            | "u"
            | "var"
            | "wbr"
            | "font"
            | "nobr"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(body: &Body) -> Vec<(BlockKind, Option<&str>, &str)> {
        body.blocks
            .iter()
            .map(|b| (b.kind, b.marker.as_deref(), b.text.as_str()))
            .collect()
    }

    #[test]
    fn plain_text_takes_an_opening_heading_as_title() {
        let body = plain(
            "Заголовок новости\n\nПервый абзац\nпродолжается.\n\n1. Пункт один;\n2) Пункт два.",
        );
        assert_eq!(body.title.as_deref(), Some("Заголовок новости"));
        use BlockKind::*;
        assert_eq!(
            texts(&body),
            vec![
                (Paragraph, None, "Первый абзац продолжается."),
                (ListItem, Some("1."), "Пункт один;"),
                (ListItem, Some("2)"), "Пункт два."),
            ]
        );
        let untitled = plain("Первая строка – длинное предложение.\nВторая строка.");
        assert_eq!((untitled.title, untitled.blocks.len()), (None, 2));
    }

    #[test]
    fn markdown_headings_lists_and_inline_markup() {
        let body = markdown("# Заголовок\n\nТекст с **жирным** и [ссылкой](http://x).\n\n## Раздел\n\n3. три\n4. четыре\n\n```\ncode\n```\n");
        assert_eq!(body.title.as_deref(), Some("Заголовок"));
        use BlockKind::*;
        assert_eq!(
            texts(&body),
            vec![
                (Paragraph, None, "Текст с жирным и ссылкой."),
                (Heading, None, "Раздел"),
                (ListItem, Some("3."), "три"),
                (ListItem, Some("4."), "четыре"),
            ]
        );
    }

    #[test]
    fn html_drops_page_chrome_and_keeps_structure() {
        let page = r#"<!doctype html><html><head><title>Сайт</title><style>p{}</style></head>
            <body><header><a href="/">Главная</a></header><nav><ul><li>Меню</li></ul></nav>
            <main><h1>Новость дня</h1><p>Первый <b>абзац</b>.<br>Строка.</p>
            <div>Свободный текст<script>alert("x")</script></div>
            <ol start="2"><li>Пункт<ul><li>Вложенный</li></ul></li><li>Ещё</li></ol>
            <h2>Справочно</h2></main><footer>© 2024</footer></body></html>"#;
        let body = html(page);
        assert_eq!(body.title.as_deref(), Some("Новость дня"));
        use BlockKind::*;
        assert_eq!(
            texts(&body),
            vec![
                (Paragraph, None, "Первый абзац. Строка."),
                (Paragraph, None, "Свободный текст"),
                (ListItem, Some("2."), "Пункт"),
                (ListItem, Some("-"), "Вложенный"),
                (ListItem, Some("3."), "Ещё"),
                (Heading, None, "Справочно"),
            ]
        );
    }

    #[test]
    fn html_without_h1_takes_the_document_title() {
        let body = html(
            "<html><head><title> Пресс-релиз </title></head><body><p>Текст.</p></body></html>",
        );
        assert_eq!(body.title.as_deref(), Some("Пресс-релиз"));
    }
}
