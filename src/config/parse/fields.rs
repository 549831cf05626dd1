//! A typed, position-aware view over the parsed TOML tree.
//!
//! The config is read by walking `toml_edit`'s document (which keeps a byte
//! span for every key and value) rather than by `serde` derive: derive stops
//! at the first error and loses positions inside nested values, while the
//! contract is "every problem, each at its own `LINE:COL`". So every getter
//! here either returns a value or records a diagnostic at the offending value
//! and returns `None`; callers fall back to a placeholder and keep going, and
//! the config is only handed out when no diagnostic was recorded.
//!
//! [`Table`] unifies the two table spellings (`[header]` and `{ inline }`),
//! and [`Table::tables`] the two array-of-table spellings (`[[header]]` and
//! `[{ … }, { … }]`), so every section accepts both.

use std::ops::RangeInclusive;
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::duration::parse_duration;
use super::span::Diags;

/// Largest value of common integer targets, as `i64` bounds for range checks.
pub(crate) const U8: i64 = u8::MAX as i64;
pub(crate) const U32: i64 = u32::MAX as i64;
pub(crate) const I64: i64 = i64::MAX;

/// A table of the document, named the way the user wrote it (for messages).
pub(crate) struct Table<'a> {
    inner: &'a dyn TableLike,
    /// Where problems about the table as a whole (a missing key) are reported.
    pub(crate) at: usize,
    /// E.g. `[[listener]]`, `[upstream.app]`, `track_upstream entry`.
    pub(crate) name: String,
}

/// One value in the document: a key's value or an array element.
#[derive(Clone, Copy)]
pub(crate) struct Field<'a> {
    /// The key, as used in messages (array elements carry their array's key).
    pub(crate) name: &'a str,
    /// Where the key is written (array elements: same as `at`).
    pub(crate) key_at: usize,
    /// Where the value starts.
    pub(crate) at: usize,
    node: Node<'a>,
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
}

fn start(span: Option<std::ops::Range<usize>>, fallback: usize) -> usize {
    span.map_or(fallback, |s| s.start)
}

impl<'a> Table<'a> {
    pub(crate) fn new(inner: &'a dyn TableLike, at: usize, name: impl Into<String>) -> Self {
        Table {
            inner,
            at,
            name: name.into(),
        }
    }

    /// Keys in document order, with their values.
    pub(crate) fn fields(&self) -> impl Iterator<Item = Field<'a>> + 'a {
        let inner = self.inner;
        let fallback = self.at;
        inner.iter().map(move |(name, item)| {
            let key_at = start(inner.key(name).and_then(|k| k.span()), fallback);
            Field {
                name,
                key_at,
                at: start(item.span(), key_at),
                node: Node::Item(item),
            }
        })
    }

    pub(crate) fn field(&self, key: &str) -> Option<Field<'a>> {
        self.fields().find(|f| f.name == key)
    }

    /// Reports every key not in `known`, with a suggestion when one is close.
    pub(crate) fn check_keys(&self, d: &mut Diags, known: &[&str]) {
        for f in self.fields() {
            if known.contains(&f.name) {
                continue;
            }
            let hint = match suggest(f.name, known.iter().copied()) {
                Some(s) => format!(" (did you mean `{s}`?)"),
                None => format!("; expected one of: {}", known.join(", ")),
            };
            d.error(
                f.key_at,
                format!("unknown key `{}` in {}{hint}", f.name, self.name),
            );
        }
    }

    /// The field, or a "missing required key" diagnostic at the table.
    pub(crate) fn required(&self, d: &mut Diags, key: &str) -> Option<Field<'a>> {
        let f = self.field(key);
        if f.is_none() {
            d.error(
                self.at,
                format!("missing required key `{key}` in {}", self.name),
            );
        }
        f
    }

    pub(crate) fn str(&self, d: &mut Diags, key: &str) -> Option<&'a str> {
        self.field(key)?.str(d)
    }

    pub(crate) fn bool(&self, d: &mut Diags, key: &str) -> Option<bool> {
        self.field(key)?.bool(d)
    }

    pub(crate) fn int<T: TryFrom<i64>>(
        &self,
        d: &mut Diags,
        key: &str,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        self.field(key)?.int(d, range)
    }

    pub(crate) fn duration(&self, d: &mut Diags, key: &str) -> Option<Duration> {
        self.field(key)?.duration(d)
    }

    /// A duration that must not be zero (timeouts, intervals).
    pub(crate) fn positive_duration(&self, d: &mut Diags, key: &str) -> Option<Duration> {
        let f = self.field(key)?;
        let v = f.duration(d)?;
        if v.is_zero() {
            d.error(f.at, format!("`{key}` must be greater than 0"));
            return None;
        }
        Some(v)
    }

    /// An array of strings, each with its position. Elements of another type
    /// are reported and left out, so the caller still checks the others.
    pub(crate) fn strings(&self, d: &mut Diags, key: &str) -> Option<Vec<(&'a str, usize)>> {
        let items = self.field(key)?.array(d)?;
        Some(
            items
                .iter()
                .filter_map(|f| f.str(d).map(|s| (s, f.at)))
                .collect(),
        )
    }

    /// A sub-table, `[a.b]` or `b = { … }`.
    pub(crate) fn table(&self, d: &mut Diags, key: &str, name: &str) -> Option<Table<'a>> {
        self.field(key)?.table(d, name)
    }

    /// An array of tables, `[[a.b]]` or `b = [{ … }, …]`. `None` when the
    /// key is absent or not an array (the latter reported).
    pub(crate) fn tables(&self, d: &mut Diags, key: &str, name: &str) -> Option<Vec<Table<'a>>> {
        self.field(key)?.tables(d, name)
    }
}

impl<'a> Field<'a> {
    fn value(&self) -> Option<&'a Value> {
        match self.node {
            Node::Item(Item::Value(v)) | Node::Value(v) => Some(v),
            Node::Item(_) => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self.node {
            Node::Item(Item::Table(_)) => "a table",
            Node::Item(Item::ArrayOfTables(_)) => "an array of tables",
            Node::Item(Item::None) => "nothing",
            Node::Item(Item::Value(v)) | Node::Value(v) => match v {
                Value::String(_) => "a string",
                Value::Integer(_) => "an integer",
                Value::Float(_) => "a float",
                Value::Boolean(_) => "a boolean",
                Value::Datetime(_) => "a date-time",
                Value::Array(_) => "an array",
                Value::InlineTable(_) => "an inline table",
            },
        }
    }

    /// Records "`key` must be EXPECTED, found TYPE" and returns `None`.
    pub(crate) fn wrong_type<T>(&self, d: &mut Diags, expected: &str) -> Option<T> {
        d.error(
            self.at,
            format!(
                "`{}` must be {expected}, found {}",
                self.name,
                self.type_name()
            ),
        );
        None
    }

    pub(crate) fn str(&self, d: &mut Diags) -> Option<&'a str> {
        match self.value() {
            Some(Value::String(s)) => Some(s.value().as_str()),
            _ => self.wrong_type(d, "a string"),
        }
    }

    pub(crate) fn bool(&self, d: &mut Diags) -> Option<bool> {
        match self.value() {
            Some(Value::Boolean(b)) => Some(*b.value()),
            _ => self.wrong_type(d, "true or false"),
        }
    }

    /// The raw integer, if this is one (no diagnostic otherwise).
    pub(crate) fn as_integer(&self) -> Option<i64> {
        self.value().and_then(Value::as_integer)
    }

    pub(crate) fn int<T: TryFrom<i64>>(
        &self,
        d: &mut Diags,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        let Some(v) = self.as_integer() else {
            return self.wrong_type(d, "an integer");
        };
        if !range.contains(&v) {
            // "between 1 and 4294967295" is noise: huge bounds are only
            // mentioned when they are what was crossed.
            let (lo, hi) = (*range.start(), *range.end());
            let want = match (v < lo, hi >= U32) {
                (true, true) => format!("at least {lo}"),
                (false, true) => format!("at most {hi}"),
                _ => format!("between {lo} and {hi}"),
            };
            d.error(
                self.at,
                format!("`{}` must be {want}, found {v}", self.name),
            );
            return None;
        }
        T::try_from(v).ok()
    }

    pub(crate) fn duration(&self, d: &mut Diags) -> Option<Duration> {
        match self.value() {
            Some(Value::String(s)) => match parse_duration(s.value()) {
                Ok(v) => Some(v),
                Err(why) => {
                    d.error(
                        self.at,
                        format!(
                            "invalid duration {:?} for `{}`: {why}",
                            s.value(),
                            self.name
                        ),
                    );
                    None
                }
            },
            Some(Value::Integer(_) | Value::Float(_)) => {
                d.error(
                    self.at,
                    format!(
                        "`{}` must be a duration string with a unit, like \"500ms\" or \"1s\", found a bare number",
                        self.name
                    ),
                );
                None
            }
            _ => self.wrong_type(d, "a duration string like \"1s\""),
        }
    }

    pub(crate) fn array(&self, d: &mut Diags) -> Option<Vec<Field<'a>>> {
        match self.value() {
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| {
                        let at = start(v.span(), self.at);
                        Field {
                            name: self.name,
                            key_at: at,
                            at,
                            node: Node::Value(v),
                        }
                    })
                    .collect(),
            ),
            _ => self.wrong_type(d, "an array"),
        }
    }

    pub(crate) fn table(&self, d: &mut Diags, name: &str) -> Option<Table<'a>> {
        match self.node {
            Node::Item(Item::Table(t)) => Some(Table::new(t, start(t.span(), self.key_at), name)),
            Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
                Some(Table::new(t, self.at, name))
            }
            _ => self.wrong_type(d, "a table"),
        }
    }

    /// `None` (reported) unless this is an array of tables. Elements that
    /// are not tables are reported and skipped.
    pub(crate) fn tables(&self, d: &mut Diags, name: &str) -> Option<Vec<Table<'a>>> {
        match self.node {
            Node::Item(Item::ArrayOfTables(a)) => Some(
                a.iter()
                    .map(|t| Table::new(t, start(t.span(), self.key_at), name))
                    .collect(),
            ),
            Node::Item(Item::Value(Value::Array(_))) => Some(
                self.array(d)?
                    .iter()
                    .filter_map(|f| f.table(d, name))
                    .collect(),
            ),
            _ if name.starts_with("[[") => {
                self.wrong_type(d, &format!("an array of tables (`{name}`)"))
            }
            _ => self.wrong_type(d, "an array of tables"),
        }
    }
}

/// The candidate closest to `word` if it is close enough to be a likely typo.
pub(crate) fn suggest<'c>(
    word: &str,
    candidates: impl Iterator<Item = &'c str>,
) -> Option<&'c str> {
    let word = word.to_ascii_lowercase();
    let limit = match word.chars().count() {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    };
    candidates
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|&(dist, _)| dist <= limit)
        .min_by_key(|&(dist, _)| dist)
        .map(|(_, c)| c)
}

/// Levenshtein distance, counting `-` and `_` as the same character.
fn edit_distance(a: &str, b: &str) -> usize {
    let norm = |c: char| if c == '-' { '_' } else { c };
    let a: Vec<char> = a.chars().map(norm).collect();
    let b: Vec<char> = b.chars().map(norm).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let keys = ["listen", "upstream", "backlog", "route"];
        assert_eq!(suggest("lisen", keys.iter().copied()), Some("listen"));
        assert_eq!(suggest("upstreams", keys.iter().copied()), Some("upstream"));
        assert_eq!(suggest("Routes", keys.iter().copied()), Some("route"));
        assert_eq!(suggest("timeout", keys.iter().copied()), None);
        let balances = ["round_robin", "least_conn"];
        assert_eq!(
            suggest("round-robin", balances.iter().copied()),
            Some("round_robin")
        );
    }
}
