//! A small typed reader over toml's spanned document tree.
//!
//! serde's `deny_unknown_fields` stops at the first problem and loses positions of semantic
//! errors; walking the spanned tree ourselves lets one pass report every unknown key (with the
//! nearest known one), every wrong type and every bad value, each at its line and column.

use std::ops::Range;
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{Location, MAX_PROBLEMS, Problem};

/// Key → value of an inline string table, each with where it was written.
pub(crate) type SpannedMap = IndexMap<String, (Spanned<String>, Spanned<String>)>;

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// Collects problems while the document is read: the first [`MAX_PROBLEMS`] by position
/// (a bounded max-heap, so a file with millions of problems neither slows down nor fills
/// memory) and how many there were. Positions are byte offsets until the end, where only
/// the kept problems get a line and column.
pub(crate) struct Report<'t> {
    text: &'t str,
    lines: std::cell::OnceCell<LineIndex>,
    kept: std::collections::BinaryHeap<Pending>,
    seq: usize,
    total: usize,
}

/// A problem before its line and column are known; ordered by position, then by when it
/// was found.
struct Pending {
    offset: usize,
    seq: usize,
    message: String,
    hint: Option<String>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.offset, self.seq) == (other.offset, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.offset, self.seq).cmp(&(other.offset, other.seq))
    }
}

/// Where each line starts and whether it is ASCII (then a column is a byte difference), so
/// a position is found by binary search instead of a scan from the top of the file.
struct LineIndex {
    starts: Vec<usize>,
    ascii: Vec<bool>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        let mut ascii = Vec::new();
        let mut line_ascii = true;
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                ascii.push(line_ascii);
                starts.push(i + 1);
                line_ascii = true;
            } else if b >= 0x80 {
                line_ascii = false;
            }
        }
        ascii.push(line_ascii);
        LineIndex { starts, ascii }
    }

    fn location(&self, text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let column = if self.ascii[line] { offset - start } else { text[start..offset].chars().count() };
        Location { line: line + 1, column: column + 1 }
    }

    fn offset(&self, text: &str, at: Location) -> usize {
        let Some(&start) = self.starts.get(at.line.saturating_sub(1)) else { return text.len() };
        let rest = &text[start..];
        rest.char_indices().nth(at.column.saturating_sub(1)).map_or(text.len(), |(i, _)| start + i)
    }
}

impl<'t> Report<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Report { text, lines: std::cell::OnceCell::new(), kept: std::collections::BinaryHeap::new(), seq: 0, total: 0 }
    }

    fn lines(&self) -> &LineIndex {
        self.lines.get_or_init(|| LineIndex::new(self.text))
    }

    pub(crate) fn location(&self, span: &Range<usize>) -> Location {
        self.lines().location(self.text, span.start)
    }

    /// A problem at byte `offset`.
    pub(crate) fn error_at_offset(&mut self, offset: usize, message: impl Into<String>, hint: Option<String>) {
        let (message, hint) = (message.into(), hint);
        // The same problem found twice (a key read by two checks) is listed once.
        if self.kept.iter().any(|p| p.offset == offset && p.message == message && p.hint == hint) {
            return;
        }
        self.total += 1;
        if self.kept.len() == MAX_PROBLEMS && self.kept.peek().is_some_and(|last| last.offset <= offset) {
            return;
        }
        self.seq += 1;
        self.kept.push(Pending { offset, seq: self.seq, message, hint });
        if self.kept.len() > MAX_PROBLEMS {
            self.kept.pop();
        }
    }

    pub(crate) fn error(&mut self, span: &Range<usize>, message: impl Into<String>, hint: Option<String>) {
        self.error_at_offset(span.start, message, hint);
    }

    pub(crate) fn at(&mut self, location: Location, message: impl Into<String>, hint: Option<String>) {
        let offset = self.lines().offset(self.text, location);
        self.error_at_offset(offset, message, hint);
    }

    /// Whether any problem was found.
    pub(crate) fn has_problems(&self) -> bool {
        self.total > 0
    }

    /// The kept problems in file order, with their lines and columns, and how many there
    /// were in all.
    pub(crate) fn into_problems(self) -> (Vec<Problem>, usize) {
        let lines = self.lines.get_or_init(|| LineIndex::new(self.text));
        let problems = self
            .kept
            .into_sorted_vec()
            .into_iter()
            .map(|p| Problem { location: lines.location(self.text, p.offset), message: p.message, hint: p.hint })
            .collect();
        (problems, self.total)
    }

    fn wrong_type(&mut self, value: &Value<'_>, name: &str, expected: &str) {
        self.error(&value.span(), format!("`{name}` must be {expected}, found {}", value.get_ref().type_str()), None);
    }

    pub(crate) fn string(&mut self, value: &Value<'_>, name: &str) -> Option<String> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(value, name, "a string");
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, value: &Value<'_>, name: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(value, name, "true or false");
                None
            }
        }
    }

    /// A non-negative integer within `min..=max`.
    pub(crate) fn integer(&mut self, value: &Value<'_>, name: &str, min: u64, max: u64) -> Option<u64> {
        let DeValue::Integer(i) = value.get_ref() else {
            self.wrong_type(value, name, "an integer");
            return None;
        };
        match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok() {
            Some(n) if n >= 0 && (n as u64) >= min && (n as u64) <= max => Some(n as u64),
            _ => {
                self.error(&value.span(), format!("`{name}` must be between {min} and {max}"), None);
                None
            }
        }
    }

    pub(crate) fn string_list(&mut self, value: &Value<'_>, name: &str) -> Option<Vec<Spanned<String>>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(value, name, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            if let Some(s) = self.string(item, &format!("{name}[]")) {
                out.push(Spanned::new(item.span(), s));
            }
        }
        Some(out)
    }

    /// An inline table of string to string, keys and values kept with their spans.
    pub(crate) fn string_map(&mut self, value: &Value<'_>, name: &str) -> Option<SpannedMap> {
        let DeValue::Table(table) = value.get_ref() else {
            self.wrong_type(value, name, "a table of strings (`{ a = \"b\" }`)");
            return None;
        };
        let mut out = IndexMap::new();
        for (k, v) in table.iter() {
            if let Some(s) = self.string(v, &format!("{name}.{}", k.get_ref())) {
                let key = Spanned::new(k.span(), k.get_ref().to_string());
                out.insert(k.get_ref().to_string(), (key, Spanned::new(v.span(), s)));
            }
        }
        Some(out)
    }

    /// A duration in the documented grammar ([`parse_duration`]): `90s`, `10m`, `1h30m`.
    pub(crate) fn duration(&mut self, value: &Value<'_>, name: &str) -> Option<Duration> {
        let s = self.string(value, name)?;
        match parse_duration(&s) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.error(&value.span(), format!("`{name}` must be longer than zero"), None);
                None
            }
            Err(e) => {
                self.error(
                    &value.span(),
                    format!("`{name}`: cannot parse duration {:?}: {e}", super::error::truncate(&s, 80)),
                    Some(DURATION_HINT.into()),
                );
                None
            }
        }
    }

    /// A byte size such as `64MiB`, `1.5G` or `512k`.
    pub(crate) fn size(&mut self, value: &Value<'_>, name: &str) -> Option<u64> {
        let s = self.string(value, name)?;
        match parse_size(&s) {
            Some(n) if n > 0 => Some(n),
            _ => {
                self.error(
                    &value.span(),
                    format!("`{name}`: cannot parse size {s:?}"),
                    Some("write sizes like \"64MiB\", \"1GiB\", \"500M\" (binary Ki/Mi/Gi or decimal k/M/G)".into()),
                );
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub(crate) fn choice<T: Copy>(&mut self, value: &Value<'_>, name: &str, choices: &[(&str, T)]) -> Option<T> {
        let s = self.string(value, name)?;
        if let Some((_, v)) = choices.iter().find(|(c, _)| *c == s) {
            return Some(*v);
        }
        let words: Vec<&str> = choices.iter().map(|(c, _)| *c).collect();
        self.error(
            &value.span(),
            format!("`{name}` must be one of {}, found {s:?}", quote_list(&words)),
            nearest(&s, &words).map(|n| format!("did you mean {n:?}?")),
        );
        None
    }
}

/// Where the nesting that hit the parser's recursion limit began: the start of the line of
/// the top-level statement around `offset` (arrays and inline tables), or, when the parser
/// gave no position (dotted keys), the first line whose keys have `dots` or more dots (else
/// the line with the most). One pass over the text, skipping strings and comments.
pub(crate) fn nesting_start(text: &str, offset: Option<usize>, dots: usize) -> usize {
    let b = text.as_bytes();
    let (mut i, mut depth, mut line_start, mut stmt_start) = (0usize, 0usize, 0usize, 0usize);
    let (mut line_dots, mut in_key, mut best) = (0usize, true, (0usize, 0usize));
    let mut at_line_start = true;
    while i < b.len() {
        if offset.is_some_and(|o| i >= o) {
            return stmt_start;
        }
        let c = b[i];
        match c {
            b'\n' => {
                if offset.is_none() && line_dots >= dots {
                    return line_start;
                }
                if line_dots > best.1 {
                    best = (line_start, line_dots);
                }
                i += 1;
                line_start = i;
                line_dots = 0;
                in_key = depth == 0;
                at_line_start = true;
                continue;
            }
            b' ' | b'\t' | b'\r' => {}
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                if at_line_start && depth == 0 {
                    stmt_start = line_start;
                }
                at_line_start = false;
                i = skip_string(b, i);
                continue;
            }
            _ => {
                if at_line_start && depth == 0 {
                    stmt_start = line_start;
                }
                at_line_start = false;
                match c {
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    b'=' => in_key = false,
                    b'.' if in_key => line_dots += 1,
                    _ => {}
                }
            }
        }
        i += 1;
    }
    if offset.is_some() {
        return stmt_start;
    }
    if line_dots >= dots || line_dots > best.1 { line_start } else { best.0 }
}

/// The index just past the string starting at `i` (basic, literal, or multi-line).
fn skip_string(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let multi = b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q);
    let mut j = if multi { i + 3 } else { i + 1 };
    while j < b.len() {
        if q == b'"' && b[j] == b'\\' {
            j += 2;
            continue;
        }
        if !multi && b[j] == b'\n' {
            return j;
        }
        if b[j] == q && (!multi || (b.get(j + 1) == Some(&q) && b.get(j + 2) == Some(&q))) {
            // A multi-line string may end with up to two more quotes: `""""" `.
            let mut end = if multi { j + 3 } else { j + 1 };
            while multi && b.get(end) == Some(&q) && end < j + 5 {
                end += 1;
            }
            return end;
        }
        j += 1;
    }
    j
}

const DURATION_HINT: &str =
    "write durations as whole numbers with a unit (ms, s, m, h, d), largest first: \"90s\", \"10m\", \"1h30m\"";

/// Parses a duration: one or more whole numbers each followed by a unit (`ms`, `s`, `m`,
/// `h`, `d`), largest unit first, each unit once, optionally separated by one space:
/// `"250ms"`, `"90s"`, `"10m"`, `"1h30m"`, `"1h 30m"`, `"2d"`. Nothing else: not
/// `"10 minutes"`, `"1.5h"`, `"10"` or `"30m1h"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const UNITS: [(&str, u64); 5] = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];
    if s.is_empty() {
        return Err("it is empty".into());
    }
    let mut rest = s;
    let mut total: u64 = 0;
    let mut last_unit = None;
    while !rest.is_empty() {
        if last_unit.is_some() {
            rest = rest.strip_prefix(' ').unwrap_or(rest);
        }
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(match rest.chars().next() {
                Some(c) if c.is_whitespace() => "only one space may separate the parts".into(),
                _ => format!("expected a whole number at {:?}", super::error::truncate(rest, 20)),
            });
        }
        let number: u64 = rest[..digits].parse().map_err(|_| "the number is too large".to_string())?;
        rest = &rest[digits..];
        let letters = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..letters];
        if unit.is_empty() {
            return Err(match rest.chars().next() {
                None => format!("{number} has no unit (ms, s, m, h or d)"),
                Some('.') => "whole numbers only (write 1h30m, not 1.5h)".into(),
                Some(c) if c.is_whitespace() => "no space between a number and its unit".into(),
                Some(c) => format!("unexpected {c:?}"),
            });
        }
        let Some(index) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!("unknown unit {:?} (ms, s, m, h or d)", super::error::truncate(unit, 20)));
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err("units go from largest to smallest, each once (1h30m, not 30m1h)".into());
        }
        last_unit = Some(index);
        total = number
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| "the duration is too long".to_string())?;
        rest = &rest[letters..];
    }
    Ok(Duration::from_millis(total))
}

/// Parses `64MiB`, `1.5G`, `512k`, `100` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "k" | "K" | "kB" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "Ki" | "KiB" => 1024.0,
        "Mi" | "MiB" => 1024.0 * 1024.0,
        "Gi" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "Ti" | "TiB" => 1024.0f64.powi(4),
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then(|| bytes.round() as u64)
}

pub(crate) fn quote_list(words: &[&str]) -> String {
    words.iter().map(|w| format!("{w:?}")).collect::<Vec<_>>().join(", ")
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub(crate) fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A table being read: remembers which keys were asked for so the rest can be reported
/// as unknown.
pub(crate) struct Table<'a, 'i> {
    table: &'a DeTable<'i>,
    span: Range<usize>,
    /// Where the table is, for messages: `[clusters.source]`, `[[migration]] "shop"`.
    name: String,
    known: Vec<&'static str>,
}

impl<'a, 'i> Table<'a, 'i> {
    pub(crate) fn new(report: &mut Report<'_>, value: &'a Value<'i>, name: impl Into<String>) -> Option<Self> {
        let name = name.into();
        match value.get_ref() {
            DeValue::Table(table) => Some(Table { table, span: value.span(), name, known: Vec::new() }),
            other => {
                report.error(&value.span(), format!("`{name}` must be a table, found {}", other.type_str()), None);
                None
            }
        }
    }

    pub(crate) fn root(table: &'a Spanned<DeTable<'i>>) -> Self {
        Table { table: table.get_ref(), span: 0..0, name: "the top level".into(), known: Vec::new() }
    }

    pub(crate) fn set_name(&mut self, name: String) {
        self.name = name;
    }

    pub(crate) fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// Marks `key` as known and returns its value if present.
    pub(crate) fn get(&mut self, key: &'static str) -> Option<&'a Value<'i>> {
        self.known.push(key);
        self.table.get(key)
    }

    /// Like [`Table::get`], but a missing key is an error.
    pub(crate) fn require(&mut self, report: &mut Report<'_>, key: &'static str) -> Option<&'a Value<'i>> {
        let v = self.get(key);
        if v.is_none() {
            report.error(&self.span, format!("{} is missing the required key `{key}`", self.name), None);
        }
        v
    }

    /// Reports every key that was never asked for.
    pub(crate) fn finish(self, report: &mut Report<'_>) {
        for (key, _) in self.table.iter() {
            let k: &str = key.get_ref();
            if self.known.contains(&k) {
                continue;
            }
            let hint = match nearest(k, &self.known) {
                Some(n) => format!("did you mean `{n}`?"),
                None => format!("known keys here: {}", self.known.join(", ")),
            };
            report.error(&key.span(), format!("unknown key `{k}` in {}", self.name), Some(hint));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB"), Some(64 * 1024 * 1024));
        assert_eq!(parse_size("1.5G"), Some(1_500_000_000));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("10 Ki"), Some(10240));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("5XB"), None);
    }

    #[test]
    fn durations_accept_only_the_documented_forms() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("90s"), Ok(90_000));
        assert_eq!(ms("10m"), Ok(600_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("1h 30m"), Ok(5_400_000));
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms("2d"), Ok(172_800_000));
        assert_eq!(ms("0s"), Ok(0));
        for bad in [
            "",
            "10 minutes",
            "10",
            "1.5h",
            "30m1h",
            "1h1h",
            "10 m",
            "1h  30m",
            " 1h",
            "1h ",
            "5 fortnights",
            "1w",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_duration("10 minutes").unwrap_err(), "no space between a number and its unit");
    }

    #[test]
    fn problems_are_the_first_by_position_and_counted() {
        let text = "a\nb\nc\n".repeat(100);
        let mut r = Report::new(&text);
        for i in (0..text.len()).rev() {
            r.error_at_offset(i, format!("p{i}"), None);
        }
        let (problems, total) = r.into_problems();
        assert_eq!(total, text.len());
        assert_eq!(problems.len(), MAX_PROBLEMS);
        assert_eq!(problems[0].location, Location { line: 1, column: 1 });
        assert_eq!(problems[2].location, Location { line: 2, column: 1 });
    }

    #[test]
    fn nesting_is_found_where_it_starts() {
        let text = format!("version = 1\n\nx = [\n{}", "[\n".repeat(100));
        assert_eq!(nesting_start(&text, Some(text.len() - 10), 79), 13);
        let dotted = format!("version = 1\n# a.b.c\ns = \"a.b\"\nx.{} = 1\n", vec!["a"; 90].join("."));
        assert_eq!(nesting_start(&dotted, None, 79), dotted.find("x.").unwrap());
    }

    #[test]
    fn nearest_finds_typos_only() {
        assert_eq!(nearest("namespce", &["name", "namespaces", "volumes"]), Some("namespaces"));
        assert_eq!(nearest("zzz", &["name", "namespaces"]), None);
    }
}
