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

use super::error::{Location, Problem};

/// Key → value of an inline string table, each with where it was written.
pub(crate) type SpannedMap = IndexMap<String, (Spanned<String>, Spanned<String>)>;

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// Collects problems while the document is read.
pub(crate) struct Report<'t> {
    text: &'t str,
    pub(crate) problems: Vec<Problem>,
}

impl<'t> Report<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Report { text, problems: Vec::new() }
    }

    pub(crate) fn location(&self, span: &Range<usize>) -> Location {
        Location::from_offset(self.text, span.start)
    }

    pub(crate) fn error(&mut self, span: &Range<usize>, message: impl Into<String>, hint: Option<String>) {
        let location = self.location(span);
        self.problems.push(Problem { location, message: message.into(), hint });
    }

    pub(crate) fn at(&mut self, location: Location, message: impl Into<String>, hint: Option<String>) {
        self.problems.push(Problem { location, message: message.into(), hint });
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

    /// A humantime duration such as `90s`, `10m` or `1h 30m`.
    pub(crate) fn duration(&mut self, value: &Value<'_>, name: &str) -> Option<Duration> {
        let s = self.string(value, name)?;
        match humantime::parse_duration(&s) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.error(&value.span(), format!("`{name}` must be longer than zero"), None);
                None
            }
            Err(e) => {
                self.error(
                    &value.span(),
                    format!("`{name}`: cannot parse duration {s:?}: {e}"),
                    Some("write durations like \"30s\", \"10m\", \"1h 30m\"".into()),
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
    fn nearest_finds_typos_only() {
        assert_eq!(nearest("namespce", &["name", "namespaces", "volumes"]), Some("namespaces"));
        assert_eq!(nearest("zzz", &["name", "namespaces"]), None);
    }
}
