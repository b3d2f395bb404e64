//! `mtsum segment` driven as a user drives it.

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;

fn segment() -> Command {
    let mut command = Command::cargo_bin("mtsum").expect("the mtsum binary is built");
    command.arg("segment");
    command
}

#[test]
fn text_output_has_one_sentence_a_line_and_blank_lines_between_blocks() {
    let doc = "Итоги операции\n\nВ 2007 г. Ю. Шток посетил г. Лион. Встреча прошла успешно.\n\
               Задержаны:\n1. Иванов И. И.;\n2. Петров П. П.\n";
    segment().write_stdin(doc).assert().success().stdout(
        "Итоги операции\n\nВ 2007 г. Ю. Шток посетил г. Лион.\nВстреча прошла успешно.\n\n\
         Задержаны:\n\n1. Иванов И. И.;\n\n2. Петров П. П.\n",
    );
}

#[test]
fn jsonl_gives_one_array_per_input_line() {
    let input = "Ущерб составил 5 млн руб. Возбуждено дело.\n\n— Вы готовы? — Да.\n";
    segment()
        .args(["--format", "jsonl"])
        .write_stdin(input)
        .assert()
        .success()
        .stdout(
            "[\"Ущерб составил 5 млн руб.\",\"Возбуждено дело.\"]\n[]\n[\"— Вы готовы?\",\"— Да.\"]\n",
        );
}

#[test]
fn files_are_read_in_order_and_html_keeps_only_content() {
    let dir = tempfile::tempdir().expect("temp dir");
    let txt = dir.path().join("a.txt");
    let html = dir.path().join("b.html");
    std::fs::write(&txt, "Первый файл.").expect("write");
    std::fs::write(
        &html,
        "<html><body><nav>Меню</nav><h2>Новости</h2><p>Второй файл. Конец.</p>\
         <script>alert(1)</script></body></html>",
    )
    .expect("write");
    segment()
        .arg(&txt)
        .arg(&html)
        .assert()
        .success()
        .stdout("Первый файл.\n\nНовости\n\nВторой файл.\nКонец.\n");
}

#[test]
fn a_file_not_in_utf8_is_named_with_a_way_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cp1251.txt");
    std::fs::write(&path, b"\xcf\xf0\xe8\xe2\xe5\xf2.").expect("write"); // "Привет." in cp1251
    segment()
        .arg(&path)
        .assert()
        .code(2)
        .stderr(contains("cp1251.txt: not UTF-8").and(contains("iconv")));
}

#[test]
fn a_missing_file_is_named() {
    segment()
        .arg("no/such/release.txt")
        .assert()
        .code(2)
        .stderr(contains("no/such/release.txt"));
}

#[test]
fn help_shows_examples() {
    segment()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("Examples:").and(contains("--format jsonl")));
}

#[test]
fn html_and_markdown_are_cut_as_mtsum_run_reads_them() {
    // The page title first, ordered lists numbered, Markdown emphasis reduced to its text.
    let dir = tempfile::tempdir().expect("temp dir");
    let html = dir.path().join("a.html");
    let md = dir.path().join("b.md");
    std::fs::write(
        &html,
        "<html><head><title>Пресс-релиз</title></head><body>\
         <ol start=\"2\"><li>Пункт.</li></ol></body></html>",
    )
    .expect("write");
    std::fs::write(&md, "Текст с **жирным** словом.\n").expect("write");
    segment()
        .arg(&html)
        .arg(&md)
        .assert()
        .success()
        .stdout("Пресс-релиз\n\n2. Пункт.\n\nТекст с жирным словом.\n");
}
