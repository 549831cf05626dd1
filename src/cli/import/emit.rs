//! The generated TOML: a list of commented sections, rendered as text.
//!
//! The mappers build [`Section`]s (a header, key/value entries, comment
//! lines) instead of writing text directly, so that sections can be
//! assembled out of order (an upstream is written after it is known whether
//! any `proxy_pass` uses it) and so that a section can be emitted commented
//! out as a whole. Values are written by hand (strings escaped as TOML basic
//! strings, durations in the largest exact unit): the output is meant to be
//! read and edited by people, so layout and comments matter more than a
//! serializer's generality.

use std::fmt::Write;
use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Dur(Duration),
    StrList(Vec<String>),
    /// Already valid TOML (inline tables, arrays of them).
    Raw(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: &'static str,
    pub value: Value,
    /// Written after the value: where it came from, what differs.
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Section {
    /// Comment lines before the header.
    pub before: Vec<String>,
    /// `[x]` or `[[x]]`; None for a comment-only block.
    pub header: Option<String>,
    pub entries: Vec<Entry>,
    /// Comment lines after the entries (e.g. `not imported:` notes).
    pub after: Vec<String>,
    /// Write every line as a comment (kept for the reader, not loaded).
    pub commented: bool,
}

impl Section {
    pub(crate) fn new(header: impl Into<String>) -> Section {
        Section {
            header: Some(header.into()),
            ..Section::default()
        }
    }

    pub(crate) fn set(&mut self, key: &'static str, value: Value, comment: Option<String>) {
        self.entries.push(Entry {
            key,
            value,
            comment,
        });
    }
}

/// Renders sections separated by blank lines.
pub(crate) fn render(header: &[String], sections: &[Section]) -> String {
    let mut out = String::new();
    for l in header {
        comment_line(&mut out, l);
    }
    for s in sections {
        if s.header.is_none() && s.entries.is_empty() && s.before.is_empty() && s.after.is_empty() {
            continue;
        }
        out.push('\n');
        for l in &s.before {
            comment_line(&mut out, l);
        }
        let prefix = if s.commented { "# " } else { "" };
        if let Some(h) = &s.header {
            let _ = writeln!(out, "{prefix}{h}");
        }
        for e in &s.entries {
            let mut line = format!("{prefix}{} = {}", e.key, value(&e.value));
            if let Some(c) = &e.comment {
                let pad = 28usize.saturating_sub(line.chars().count()).max(1);
                line.push_str(&" ".repeat(pad));
                line.push_str("# ");
                line.push_str(&one_line(c));
            }
            out.push_str(&line);
            out.push('\n');
        }
        for l in &s.after {
            comment_line(&mut out, l);
        }
    }
    out
}

fn comment_line(out: &mut String, l: &str) {
    if l.is_empty() {
        out.push_str("#\n");
    } else {
        let _ = writeln!(out, "# {}", one_line(l));
    }
}

/// Comments cannot span lines; a newline inside would end the comment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

pub(crate) fn value(v: &Value) -> String {
    match v {
        Value::Str(s) => quote(s),
        Value::Int(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Dur(d) => quote(&duration(*d)),
        Value::StrList(l) => {
            let items: Vec<String> = l.iter().map(|s| quote(s)).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Raw(r) => r.clone(),
    }
}

/// A TOML basic string.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A table key: bare when it can be, quoted otherwise.
pub(crate) fn key(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        s.to_string()
    } else {
        quote(s)
    }
}

/// A duration in ringlb's syntax, in the largest unit that is exact.
pub(crate) fn duration(d: Duration) -> String {
    let ns = d.as_nanos();
    const UNITS: &[(&str, u128)] = &[
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    if ns == 0 {
        return "0s".into();
    }
    for &(unit, scale) in UNITS {
        if ns.is_multiple_of(scale) {
            return format!("{}{unit}", ns / scale);
        }
    }
    unreachable!("every duration is a whole number of nanoseconds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_the_largest_exact_unit() {
        assert_eq!(duration(Duration::from_secs(7200)), "2h");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_secs(120)), "2m");
        assert_eq!(duration(Duration::from_millis(100)), "100ms");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::ZERO), "0s");
    }

    #[test]
    fn strings_and_keys_are_escaped() {
        assert_eq!(quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(key("backend-1_x"), "backend-1_x");
        assert_eq!(key("api.example"), "\"api.example\"");
    }

    #[test]
    fn commented_sections_load_as_nothing() {
        let mut s = Section::new("[upstream.x]");
        s.set("keepalive", Value::Int(3), Some("from\nx".into()));
        s.commented = true;
        let text = render(&["head".into()], &[s]);
        assert_eq!(
            text,
            "# head\n\n# [upstream.x]\n# keepalive = 3             # from x\n"
        );
    }
}
