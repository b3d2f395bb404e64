#!/usr/bin/env python3
"""Compare `mtsum segment --format jsonl` with razdel, the Python reference for Russian.

The text is ours: sentences generated from templates in the style of Russian press releases
and news (initials, abbreviations, dates, amounts, legal references, quotes, dialogue,
questions, ellipses, Latin names), grouped into one-line documents. No corpus is used.
Because the generator knows where each sentence ends, the script reports, per 1,000
sentences:

  - disagreements: boundaries that one segmenter makes and the other does not;
  - errors of each segmenter against the generated truth, by kind of sentence.

It also runs razdel on our hand-written cases (tests/data/segmentation_cases.txt).

Usage (from the repository root; razdel from PyPI):
    pip install razdel
    cargo build --release
    python3 scripts/razdel_compare.py [--sentences 5000] [--seed 7] [--mtsum target/release/mtsum]
"""

import argparse
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

from razdel import sentenize

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- vocabulary (our own words)

ORGS = ["МВД России", "ФСБ России", "Госавтоинспекция", "МЧС России", "Росгвардия", "ФТС России",
        "Следственный комитет", "прокуратура области", "Минфин России", "Интерпол", "Европол",
        "управление полиции", "пресс-служба ведомства", "Банк России", "Минздрав России",
        "правительство региона", "мэрия города", "Роспотребнадзор"]
ROLES = ["начальник управления", "заместитель министра", "генерал-майор полиции",
         "руководитель пресс-службы", "старший следователь", "глава региона", "эксперт",
         "председатель комиссии", "директор департамента", "статс-секретарь", "полковник юстиции",
         "профессор", "к.ю.н.", "доц."]
FIRST_INITIALS = "АБВГДЕИКЛМНОПРСТЮЯ"
SURNAMES = ["Иванов", "Петров", "Смирнов", "Кузнецов", "Соколов", "Попов", "Лебедев", "Козлов",
            "Новиков", "Морозов", "Волков", "Зубов", "Орлов", "Шток", "Карташов", "Баранов",
            "Федоров", "Михайлов", "Белов", "Тарасов", "Комаров", "Захаров", "Борисов"]
FULL_NAMES = ["Игорь Зубов", "Анна Петрова", "Сергей Орлов", "Мария Соколова", "Олег Белов",
              "Ирина Волкова", "Дмитрий Козлов", "Елена Морозова"]
FOREIGN = ["Дж. Смит", "Дж. Браун", "Дж. Р. Уилсон", "М. Баллестраззи", "Н. Накатани", "Ю. Шток"]
CITIES_PREP = ["Москве", "Санкт-Петербурге", "Казани", "Новосибирске", "Екатеринбурге", "Сочи",
               "Твери", "Лионе", "Женеве", "Сингапуре", "Нижнем Новгороде", "Калининграде"]
STREETS = ["Ленина", "Мира", "Петровке", "Житной", "Садовой", "Гагарина", "Победы"]
MONTHS = ["января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября",
          "октября", "ноября", "декабря"]
ACTIONS = [
    "провели совместную операцию по пресечению каналов контрабанды",
    "задержали группу мошенников, похищавших деньги с банковских карт",
    "завершили проверку объектов транспортной инфраструктуры",
    "подвели итоги работы за первое полугодие",
    "провели профилактический рейд на дорогах региона",
    "выявили более 200 нарушений миграционного законодательства",
    "приняли участие в международной конференции по кибербезопасности",
    "обсудили вопросы взаимодействия в сфере борьбы с коррупцией",
    "пресекли деятельность подпольной лаборатории",
    "усилили охрану общественного порядка в период праздников",
    "открыли новый центр обработки обращений граждан",
    "подписали соглашение о сотрудничестве",
]
OBJECTS = ["наркотики", "оружие", "боеприпасы", "поддельные документы", "контрафактный алкоголь",
           "табачную продукцию", "банковские карты", "сим-карты", "деньги"]
ADVICE = ["Не сообщайте посторонним код из СМС", "Пристёгивайтесь ремнями безопасности",
          "Не переходите дорогу на красный свет", "Проверяйте, с кем вы разговариваете",
          "Не оставляйте детей без присмотра", "Сообщайте о подозрительных предметах"]
QUESTIONS = ["Как защититься от телефонных мошенников", "Что делать, если вас обманули",
             "Куда обращаться при краже документов", "Почему растёт число аварий",
             "Кто отвечает за безопасность на дорогах", "Зачем нужен техосмотр"]
STATEMENTS = ["Работа будет продолжена", "Мы готовы к сотрудничеству",
              "Ситуация находится под контролем", "Итоги операции превзошли ожидания",
              "Безопасность граждан остаётся нашим приоритетом",
              "Все задержанные дали признательные показания"]
SAID = ["сказал", "отметил", "подчеркнул", "заявил", "сообщил"]
COMPANIES = ["Group-IB Ltd.", "Apple Inc.", "Kaspersky", "Google", "Microsoft Corp.", "Cisco"]


def initials(r):
    first = r.choice(FIRST_INITIALS)
    if r.random() < 0.6:
        return f"{first}. {r.choice(FIRST_INITIALS)}."
    return f"{first}."


def person(r):
    kind = r.random()
    if kind < 0.55:
        return f"{initials(r)} {r.choice(SURNAMES)}"
    if kind < 0.8:
        return r.choice(FULL_NAMES)
    return r.choice(FOREIGN)


def date(r):
    day, month, year = r.randint(1, 28), r.choice(MONTHS), r.randint(1995, 2025)
    return r.choice([f"{day} {month} {year} г.", f"{day} {month} {year} года", f"{day} {month}"])


def amount(r):
    n = r.choice([str(r.randint(2, 900)), f"{r.randint(1, 99)},{r.randint(1, 9)}"])
    unit = r.choice(["тыс. руб.", "млн руб.", "млрд руб.", "млн рублей", "тыс. рублей", "млрд. рублей"])
    return f"{n} {unit}"


# ------------------------------------------------- sentence templates, each returns (kind, text)

def plain(r):
    place = r.choice(["", f" в г. {r.choice(CITIES_PREP)}", f" в {r.choice(CITIES_PREP)}"])
    return "plain", f"Сотрудники {r.choice(['полиции', 'ведомства', 'таможни', 'ФСБ'])}{place} {r.choice(ACTIONS)}."


def org_action(r):
    first, second = r.sample(ORGS, 2)
    return "plain", f"{first[0].upper()}{first[1:]} и {second} {r.choice(ACTIONS)}."


def with_person(r):
    return "initials", f"По словам {r.choice(['начальника управления', 'заместителя министра', 'эксперта'])} {person(r)}, {r.choice(STATEMENTS).lower()}."


def person_first(r):
    return "initials", f"{r.choice(ROLES).capitalize()} {person(r)} {r.choice(['выступил с докладом', 'провёл совещание', 'ответил на вопросы журналистов', 'представил итоги года'])}."


def dated(r):
    d = date(r)
    start = r.choice([f"{d[0].upper()}{d[1:]}", f"В {r.randint(1995, 2025)} г.", f"С {r.randint(1, 28)} {r.choice(MONTHS)} {r.randint(2000, 2025)} г."])
    return "dates", f"{start} {r.choice(ORGS)} {r.choice(ACTIONS)}."


def dated_end(r):
    return "dates", f"Соглашение {r.choice(['подписано', 'вступило в силу', 'продлено'])} {r.randint(1, 28)} {r.choice(MONTHS)} {r.randint(1995, 2025)} г."


def years(r):
    a = r.randint(1990, 2020)
    return "dates", f"В {a}–{a + r.randint(1, 4)} гг. число {r.choice(['обращений', 'преступлений', 'аварий'])} {r.choice(['выросло', 'снизилось'])} на {r.randint(2, 40)} проц."


def money(r):
    text = f"{r.choice(['Ущерб составил', 'Сумма похищенного превысила', 'На программу выделено', 'Штраф составит'])} {amount(r)}"
    return "amounts", text if text.endswith(".") else text + "."


def people_count(r):
    return "amounts", f"{r.choice(['В акции', 'В учениях', 'В форуме'])} приняли участие более {r.randint(2, 90)} тыс. человек."


def number_start(r):
    return "numbers", f"{r.randint(2, 95)} {r.choice(['человек задержаны', 'из них ранее судимы', 'автомобилей эвакуированы', 'процентов опрошенных поддержали меры'])}."


def decimal(r):
    return "numbers", f"Показатель {r.choice(['вырос', 'снизился'])} до {r.randint(1, 99)}.{r.randint(1, 9)} {r.choice(['процента', 'пункта'])} за {r.choice(['квартал', 'год', 'месяц'])}."


def legal(r):
    return "legal", f"Возбуждено уголовное дело по ч. {r.randint(1, 4)} ст. {r.randint(105, 330)} УК РФ, {r.choice(['санкция', 'статья'])} предусматривает до {r.randint(2, 15)} лет лишения свободы."


def legal_section(r):
    return "legal", f"Нарушение предусмотрено п. {r.randint(1, 9)}.{r.randint(1, 9)}. Правил дорожного движения и ст. {r.randint(12, 20)}.{r.randint(1, 30)} КоАП РФ."


def order_no(r):
    return "legal", f"Приказ № {r.randint(1, 999)} {r.choice(['вступил в силу', 'опубликован', 'подписан'])} {r.randint(1, 28)} {r.choice(MONTHS)}."


def abbreviations(r):
    objs = r.sample(OBJECTS, 3)
    tail = r.choice(["и т. д.", "и т. п.", "и др.", "и т.д.", "и пр."])
    return "abbreviations", f"Изъяты {objs[0]}, {objs[1]}, {objs[2]} {tail}"


def that_is(r):
    return "abbreviations", f"Задержанный, т. е. {r.choice(['гражданин', 'житель'])} {r.choice(['Н.', 'К.', 'С.'])}, {r.choice(['доставлен в отдел полиции', 'заключён под стражу'])}."


def so_called(r):
    return "abbreviations", f"Речь идёт о т.н. «{r.choice(['серых', 'теневых', 'обнальных'])}» схемах, выявленных в {r.choice(CITIES_PREP)}."


def address(r):
    return "addresses", f"Приём граждан ведётся по адресу: г. {r.choice(['Москва', 'Тверь', 'Казань'])}, ул. {r.choice(STREETS)}, д. {r.randint(1, 99)}, корп. {r.randint(1, 5)}."


def named_after(r):
    return "addresses", f"{r.choice(['Выставка открылась', 'Встреча прошла', 'Олимпиада состоялась'])} в {r.choice(['музее', 'университете', 'школе'])} им. {initials(r)} {r.choice(SURNAMES)}а."


def quote(r):
    return "quotes", f"«{r.choice(STATEMENTS)}», — {r.choice(SAID)} {r.choice(ROLES)} {person(r)}."


def quote_inner(r):
    a, b = r.sample(STATEMENTS, 2)
    return "quotes", f"«{a}. {b}», — {r.choice(SAID)} {person(r)}."


def quote_colon(r):
    return "quotes", f"{person(r)} {r.choice(SAID)}: «{r.choice(STATEMENTS)}»."


def quote_name(r):
    return "quotes", f"Операция получила название «{r.choice(['Мак', 'Канал', 'Путина', 'Нелегал'])}-{r.randint(2015, 2025)}»."


def question(r):
    return "questions", f"{r.choice(QUESTIONS)}?"


def exclaim(r):
    return "questions", f"{r.choice(ADVICE)}!"


def ellipsis(r):
    return "ellipses", f"{r.choice(['Расследование продолжается', 'Число звонков растёт', 'Поиски ведутся'])}{r.choice(['...', '…'])}"


def dialogue(r):
    return "dialogue", f"— {r.choice(QUESTIONS)}? — {r.choice(['спросил', 'уточнил'])} {r.choice(['журналист', 'инспектор', 'следователь'])}."


def dialogue_reply(r):
    return "dialogue", f"— {r.choice(STATEMENTS)}, — {r.choice(SAID)} {r.choice(['дежурный', 'инспектор', 'полковник'])}."


def brackets(r):
    return "brackets", f"{r.choice(['Соглашение', 'Меморандум'])} (подписан в {r.randint(2000, 2024)} г. в г. {r.choice(['Женеве', 'Лионе', 'Вене'])}) {r.choice(['действует пять лет', 'продлён'])}."


def latin(r):
    company = r.choice(COMPANIES)
    end = r.choice(["", " при участии экспертов Europol."])
    return "latin", f"Отчёт подготовлен компанией {company}{end}" + ("" if (end or company).endswith(".") else ".")


def century(r):
    return "dates", f"В {r.choice(['XIX', 'XX', 'XVIII'])} в. {r.choice(['город', 'район', 'порт'])} был важным {r.choice(['торговым', 'промышленным'])} центром."


def web(r):
    site = r.choice(["мвд.рф", "gibdd.ru", "www.mchs.gov.ru", "press@mvd.ru"])
    return "web", f"Подробности {r.choice(['опубликованы на сайте', 'можно узнать по адресу'])} {site}."


def percent_time(r):
    return "numbers", f"{r.choice(['Раскрываемость выросла на', 'Доля нарушений снизилась на'])} {r.randint(2, 40)}% {r.choice(['к 18:00', 'за сутки', 'по итогам года'])}."


def ends_with_number(r):
    return "numbers", f"{r.choice(['Число пострадавших составило', 'Всего задержанных', 'Количество эвакуированных достигло'])} {r.randint(2, 900)}."


def ends_with_date(r):
    return "dates", f"Информация актуальна на {r.randint(10, 28)}.{r.randint(10, 12)}.{r.randint(2015, 2025)}."


def ends_with_acronym(r):
    return "plain", f"{r.choice(['Делегация прибыла из', 'Соглашение подписано с представителями', 'Запрос направлен в'])} {r.choice(['США', 'ООН', 'ОБСЕ', 'КНР', 'ЕАЭС', 'МВД РФ'])}."


def parenthesis_end(r):
    return "brackets", f"{r.choice(['Фото', 'Видео', 'Схема проезда'])} предоставлено пресс-службой ({r.choice(['архив', 'иллюстрация', 'фото: МВД'])})."


def quote_start(r):
    return "quotes", f"«{r.choice(['Ростелеком', 'Аэрофлот', 'Почта России', 'Сбербанк'])}» {r.choice(['сообщил о сбое', 'предупредил клиентов', 'усилил защиту данных'])}."


def quoted_question(r):
    return "quotes", f"«{r.choice(QUESTIONS)}?» — {r.choice(['спрашивают читатели', 'такой вопрос задали школьники'])}."


def because(r):
    return "abbreviations", f"Движение ограничено, т. к. {r.choice(['ведутся ремонтные работы', 'проходят учения', 'на трассе гололёд'])}."


def for_example(r):
    return "abbreviations", f"Мошенники используют {r.choice(['мессенджеры', 'соцсети'])}, напр. {r.choice(['Telegram', 'WhatsApp', 'VK'])}, для рассылки ссылок."


def see_also(r):
    return "abbreviations", f"Порядок действий описан в памятке (см. {r.choice(['приложение', 'раздел'])} {r.randint(1, 9)})."


def approx(r):
    return "amounts", f"В мероприятии участвовали ок. {r.randint(2, 900)} человек из {r.randint(2, 60)} регионов."


def short(r):
    return "plain", r.choice(["Пострадавших нет.", "Возбуждено уголовное дело.", "Расследование продолжается.",
                              "Задержанный заключён под стражу.", "Угрозы жизни нет.", "Ведётся проверка."])


def inline_list(r):
    return "lists", f"Задачи на год: 1) {r.choice(ADVICE).lower()}; 2) {r.choice(ADVICE).lower()}."


def monarch(r):
    return "hard", f"Музей посвящён эпохе {r.choice(['Петра I', 'Екатерины II', 'Александра III'])}."


def grade_letter(r):
    return "hard", f"Обучение прошли водители категории {r.choice(['B', 'C', 'D'])}."


TEMPLATES = [plain, org_action, with_person, person_first, dated, dated_end, years, money,
             people_count, number_start, decimal, legal, legal_section, order_no, abbreviations,
             that_is, so_called, address, named_after, quote, quote_inner, quote_colon, quote_name,
             question, exclaim, ellipsis, dialogue, dialogue_reply, brackets, latin, century, web,
             percent_time, ends_with_number, ends_with_date, ends_with_acronym, parenthesis_end,
             quote_start, quoted_question, because, for_example, see_also, approx, short,
             inline_list, monarch, grade_letter]


def documents(count, seed):
    """One-line documents of 2 to 7 sentences: (text, [(kind, start, end)])."""
    r = random.Random(seed)
    docs, made = [], 0
    while made < count:
        n = min(r.randint(2, 7), count - made)
        parts, spans, pos = [], [], 0
        for _ in range(n):
            kind, sentence = r.choice(TEMPLATES)(r)
            spans.append((kind, pos, pos + len(sentence)))
            parts.append(sentence)
            pos += len(sentence) + 1
        docs.append((" ".join(parts), spans))
        made += n
    return docs


# ---------------------------------------------------------------------------- comparison

def ends(text, sentences):
    """Character offsets where each sentence but the last ends (found in order in text)."""
    offsets, pos = set(), 0
    for sentence in sentences:
        start = text.index(sentence, pos)
        pos = start + len(sentence)
        offsets.add(pos)
    offsets.discard(len(text.rstrip()))
    return offsets


def run_mtsum(binary, lines):
    out = subprocess.run([binary, "segment", "--format", "jsonl"], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def kind_at(spans, offset):
    for kind, start, end in spans:
        if start <= offset <= end:
            return kind
    return "?"


def compare(binary, count, seed):
    docs = documents(count, seed)
    texts = [text for text, _ in docs]
    ours = run_mtsum(binary, texts)
    disagree, by_kind, errors = 0, Counter(), {"mtsum": Counter(), "razdel": Counter()}
    for (text, spans), our in zip(docs, ours):
        truth = {end for _, _, end in spans[:-1]}
        mine = ends(text, our)
        theirs = ends(text, [s.text for s in sentenize(text)])
        disagree += len(mine ^ theirs)
        by_kind.update(kind_at(spans, offset) for offset in mine ^ theirs)
        for name, found in (("mtsum", mine), ("razdel", theirs)):
            for offset in found ^ truth:
                errors[name][kind_at(spans, offset)] += 1
    per_k = lambda n: 1000.0 * n / count
    print(f"{count} generated sentences in {len(docs)} documents (seed {seed})")
    detail = ", ".join(f"{k} {v}" for k, v in by_kind.most_common())
    print(f"disagreements mtsum vs razdel: {disagree} = {per_k(disagree):.1f} per 1,000 sentences ({detail})")
    for name, counter in errors.items():
        total = sum(counter.values())
        detail = ", ".join(f"{k} {v}" for k, v in counter.most_common())
        print(f"{name} errors vs generated truth: {total} = {per_k(total):.1f} per 1,000 ({detail or 'none'})")


def razdel_on_cases():
    cases = [line.strip().split(" | ") for line in
             (ROOT / "tests/data/segmentation_cases.txt").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    passed = sum([s.text for s in sentenize(" ".join(c))] == c for c in cases)
    print(f"razdel on tests/data/segmentation_cases.txt: {passed}/{len(cases)} cases "
          f"({100.0 * passed / len(cases):.1f} %)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mtsum", default=str(ROOT / "target/release/mtsum"))
    parser.add_argument("--dump", type=Path, help="write the generated documents here, one a line")
    args = parser.parse_args()
    if args.dump:
        args.dump.write_text("\n".join(t for t, _ in documents(args.sentences, args.seed)) + "\n",
                             encoding="utf-8")
    if not Path(args.mtsum).exists():
        sys.exit(f"{args.mtsum} not found: build it first (cargo build --release) or pass --mtsum")
    compare(args.mtsum, args.sentences, args.seed)
    razdel_on_cases()


if __name__ == "__main__":
    main()
