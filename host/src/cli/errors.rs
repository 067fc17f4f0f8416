//! Failures as a person reads them: printed once (the human report on stderr, or one JSON
//! document with `--output json`, never both), text from outside (an API server's message,
//! a plugin's error, a name from a kubeconfig) cut to a readable length with the whole text
//! logged at `-vv`, and the same error on many objects shown once with a count.

use std::borrow::Cow;
use std::collections::HashMap;

use super::Output;
use crate::spec::MAX_OUTSIDE_TEXT;

/// How much of a long text is kept from its end: the innermost cause ("Connection
/// refused", "is forbidden: …") is usually last, so a cut keeps both ends.
const TAIL: usize = 100;

/// `text` as printed: at most about [`MAX_OUTSIDE_TEXT`] characters, the middle cut with a
/// note of how much. A cut text is logged whole at debug level (`-vv`).
pub fn readable(text: &str) -> Cow<'_, str> {
    if text.lines().all(|l| l.len() <= MAX_OUTSIDE_TEXT) {
        return Cow::Borrowed(text);
    }
    tracing::debug!(full_text = %text, "the whole text of a message cut for display");
    // Line by line: in "source: …\n  destination: …" each side keeps its own ending.
    Cow::Owned(text.split('\n').map(cut_line).collect::<Vec<_>>().join("\n"))
}

fn cut_line(text: &str) -> Cow<'_, str> {
    let chars = text.chars().count();
    if chars <= MAX_OUTSIDE_TEXT {
        return Cow::Borrowed(text);
    }
    let head_end = text.char_indices().nth(MAX_OUTSIDE_TEXT - TAIL).map_or(text.len(), |(i, _)| i);
    let tail_start = text.char_indices().nth(chars - TAIL).map_or(text.len(), |(i, _)| i);
    Cow::Owned(format!(
        "{}… [{} bytes cut; -vv logs the whole text] …{}",
        &text[..head_end],
        tail_start - head_end,
        &text[tail_start..]
    ))
}

/// Error texts the event renderer has already printed (a hook's verdict, an image copy's
/// failure): when the command then stops with the same text, it is not printed again.
static PRINTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Notes that `text` was printed as part of an event line.
pub fn printed(text: &str) {
    if text.len() >= 20 {
        PRINTED.lock().unwrap_or_else(|e| e.into_inner()).push(text.to_string());
    }
}

/// `text` with every error an event already printed replaced by a pointer to it.
fn without_printed(text: &str) -> String {
    let printed = PRINTED.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for p in printed.iter() {
        if out.contains(p.as_str()) {
            out = out.replace(p.as_str(), "(the error printed above)");
        }
    }
    out
}

/// Prints an error once, with its causes (each new piece once); file problems print as
/// `file:line:col: message`, the first 50 and a count. JSON goes to stdout and nothing to
/// stderr; the human report goes to stderr.
pub fn report_error(e: &anyhow::Error, output: Output) {
    let problems = e.chain().find_map(|c| match c.downcast_ref::<crate::spec::SpecError>() {
        Some(crate::spec::SpecError::Invalid(p)) => Some(p.clone()),
        _ => c.downcast_ref::<crate::spec::Problems>().cloned(),
    });
    // Wrapped errors often repeat their source's text: keep the causes that add something.
    let mut shown = e.to_string();
    let mut causes = Vec::new();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !shown.contains(&text) {
            causes.push(text.clone());
        }
        shown.push_str(&text);
    }
    let message = e.to_string();
    if output == Output::Json {
        let json = serde_json::json!({
            "error": readable(&message),
            "causes": causes.iter().map(|c| readable(c)).collect::<Vec<_>>(),
            "problems": problems.as_ref().map(|p| p.to_json()),
            "problem_count": problems.as_ref().map(|p| p.total),
        });
        println!("{json}");
        return;
    }
    if let Some(p) = problems {
        eprintln!("{p}");
        let n = p.total;
        eprintln!("error: {} has {n} problem{}; nothing was changed", p.path.display(), if n == 1 { "" } else { "s" });
        return;
    }
    eprintln!("error: {}", readable(&without_printed(&message)));
    let mut last = String::new();
    for c in causes {
        let c = without_printed(&c);
        // A cause that was wholly printed above adds nothing.
        if c != "(the error printed above)" && c != last {
            eprintln!("  caused by: {}", readable(&c));
        }
        last = c;
    }
}

/// Object failures with the same error, shown once: the first in full, the others counted
/// and named (up to [`NAMED`]) when [`Grouped::flush`] runs (at the end of a command, and
/// after each `apply --watch` cycle).
#[derive(Default)]
pub struct Grouped {
    /// Error (with the object's own name taken out) → the objects after the first.
    seen: HashMap<String, Group>,
    order: Vec<String>,
}

struct Group {
    first: String,
    more: Vec<String>,
}

/// How many further objects a group names.
const NAMED: usize = 5;

impl Grouped {
    /// The line to print for this failure now, or `None` when an earlier object failed
    /// with the same error (it is counted instead).
    pub fn failure(&mut self, object: &str, error: &str) -> Option<String> {
        let key = shape(object, error);
        if let Some(g) = self.seen.get_mut(&key) {
            g.more.push(object.to_string());
            return None;
        }
        self.order.push(key.clone());
        self.seen.insert(key, Group { first: object.to_string(), more: Vec::new() });
        Some(format!("  failed {object}: {}", readable(error)))
    }

    /// One line per error that more than one object had; forgets them all.
    pub fn flush(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        for key in self.order.drain(..) {
            let Some(g) = self.seen.remove(&key) else { continue };
            if g.more.is_empty() {
                continue;
            }
            let n = g.more.len();
            let named = g.more.iter().take(NAMED).cloned().collect::<Vec<_>>().join(", ");
            let rest = if n > NAMED { format!(", … ({} more)", n - NAMED) } else { String::new() };
            lines.push(format!("  failed {n} more object(s) with the same error as {}: {named}{rest}", g.first));
        }
        lines
    }
}

/// The error with the object's namespace and name replaced, so that "configmaps \"a\" is
/// forbidden" and "configmaps \"b\" is forbidden" are the same error.
fn shape(object: &str, error: &str) -> String {
    let mut key = error.to_string();
    let mut parts: Vec<&str> = object.rsplit('/').take(2).collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for part in parts {
        if part.len() >= 2 {
            key = key.replace(part, "…");
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_keep_both_ends_and_say_how_much_was_cut() {
        assert_eq!(readable("short"), "short");
        let long =
            format!("context \"{}\": API server could not be reached: Connection refused", "x".repeat(10_000_000));
        let r = readable(&long);
        assert!(r.chars().count() < MAX_OUTSIDE_TEXT + 80, "{}", r.len());
        assert!(r.starts_with("context \"xxx"));
        assert!(r.ends_with("could not be reached: Connection refused"));
        assert!(r.contains("bytes cut; -vv logs the whole text]"));
    }

    #[test]
    fn an_error_an_event_printed_is_not_printed_again() {
        printed("the annotation shop.example.com/ready is missing on namespace shop");
        assert_eq!(
            without_printed(
                "pre-cutover hook require-annotation failed: the annotation shop.example.com/ready is missing on namespace shop"
            ),
            "pre-cutover hook require-annotation failed: (the error printed above)"
        );
        assert_eq!(without_printed("something else"), "something else");
    }

    #[test]
    fn the_same_error_on_many_objects_is_printed_once_with_a_count() {
        let mut g = Grouped::default();
        let forbidden = |n: &str| format!("configmaps \"{n}\" is forbidden: User \"u\" cannot create resource");
        assert!(g.failure("ConfigMap/shop/cm-0", &forbidden("cm-0")).unwrap().contains("cm-0"));
        for i in 1..8 {
            assert_eq!(g.failure(&format!("ConfigMap/shop/cm-{i}"), &forbidden(&format!("cm-{i}"))), None);
        }
        assert!(g.failure("Secret/shop/s", "secrets \"s\" already exists").is_some());
        assert_eq!(
            g.flush(),
            [
                "  failed 7 more object(s) with the same error as ConfigMap/shop/cm-0: ConfigMap/shop/cm-1, ConfigMap/shop/cm-2, ConfigMap/shop/cm-3, ConfigMap/shop/cm-4, ConfigMap/shop/cm-5, … (2 more)"
            ]
        );
        assert!(g.flush().is_empty());
        assert!(g.failure("ConfigMap/shop/cm-9", &forbidden("cm-9")).is_some(), "a new cycle prints it again");
    }
}
