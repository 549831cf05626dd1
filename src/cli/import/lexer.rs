//! Characters → tokens for nginx's and keepalived's configuration syntax.
//!
//! Both formats are "words, braces, comments": nginx ends a directive with
//! `;`, keepalived ends it at the end of the line. So one tokenizer serves
//! both; it records for every token whether it starts a line, and the
//! dialect only decides what a comment looks like (`#`; keepalived also
//! `!`), which quotes exist, and whether `;` is a token. Turning tokens into
//! directives is [`super::syntax`]'s job.
//!
//! Positions are 1-based line and column (in characters), so errors read
//! `FILE:LINE:COL: message` like every other diagnostic of ringlb.

use std::rc::Rc;

use crate::config::Diagnostic;

/// Which program's syntax a file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Nginx,
    Keepalived,
}

/// Where something is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pos {
    pub file: Rc<str>,
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub(crate) fn diag(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line: self.line,
            col: self.col,
            message: message.into(),
        }
    }

    /// `FILE:LINE`, for provenance comments in the generated TOML.
    pub(crate) fn short(&self) -> String {
        let name = self.file.rsplit('/').next().unwrap_or(&self.file);
        format!("{name}:{}", self.line)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Word,
    Open,
    Close,
    /// nginx only.
    Semi,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub kind: Kind,
    /// The word with quotes removed and escapes applied; empty for punctuation.
    pub text: String,
    /// The word was (at least partly) quoted: `"a b"`.
    pub quoted: bool,
    /// First token on its line (keepalived ends directives at line ends).
    pub line_start: bool,
    pub pos: Pos,
}

/// Splits `text` into tokens; the only errors are unterminated quotes and
/// text glued to a closing quote.
pub(crate) fn tokenize(
    text: &str,
    file: &Rc<str>,
    dialect: Dialect,
) -> Result<Vec<Token>, Diagnostic> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let mut line_start = true;
    let pos = |line, col| Pos {
        file: file.clone(),
        line,
        col,
    };
    let is_comment = |c: char| c == '#' || (dialect == Dialect::Keepalived && c == '!');
    let is_quote = |c: char| c == '"' || (dialect == Dialect::Nginx && c == '\'');
    let is_punct = |c: char| c == '{' || c == '}' || (dialect == Dialect::Nginx && c == ';');
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            i += 1;
            line += 1;
            col = 1;
            line_start = true;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            col += 1;
            continue;
        }
        if is_comment(c) {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let start = pos(line, col);
        if is_punct(c) {
            let kind = match c {
                '{' => Kind::Open,
                '}' => Kind::Close,
                _ => Kind::Semi,
            };
            out.push(Token {
                kind,
                text: String::new(),
                quoted: false,
                line_start,
                pos: start,
            });
            line_start = false;
            i += 1;
            col += 1;
            continue;
        }
        // A word: unquoted characters and quoted runs, up to whitespace or
        // punctuation.
        let mut word = String::new();
        let mut quoted = false;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() || is_punct(c) {
                // nginx variables may be written `${name}`: those braces
                // belong to the word.
                if c == '{' && dialect == Dialect::Nginx && word.ends_with('$') {
                    while i < chars.len() && chars[i] != '}' && chars[i] != '\n' {
                        word.push(chars[i]);
                        i += 1;
                        col += 1;
                    }
                    if i < chars.len() && chars[i] == '}' {
                        word.push('}');
                        i += 1;
                        col += 1;
                    }
                    continue;
                }
                break;
            }
            if is_quote(c) && word.is_empty() && !quoted {
                let open = pos(line, col);
                quoted = true;
                i += 1;
                col += 1;
                let mut closed = false;
                while i < chars.len() {
                    let q = chars[i];
                    if q == c {
                        i += 1;
                        col += 1;
                        closed = true;
                        break;
                    }
                    if q == '\\' && dialect == Dialect::Nginx && i + 1 < chars.len() {
                        escape(&mut word, chars[i + 1]);
                        i += 2;
                        col += 2;
                        continue;
                    }
                    if q == '\n' {
                        line += 1;
                        col = 1;
                    } else {
                        col += 1;
                    }
                    word.push(q);
                    i += 1;
                }
                if !closed {
                    return Err(
                        open.diag(format!("unterminated quoted string (missing closing {c})"))
                    );
                }
                if i < chars.len()
                    && !(chars[i].is_whitespace() || is_punct(chars[i]) || is_comment(chars[i]))
                {
                    return Err(pos(line, col).diag(format!(
                        "unexpected {:?} after a quoted string; put a space between words",
                        chars[i]
                    )));
                }
                break;
            }
            if c == '\\' && dialect == Dialect::Nginx && i + 1 < chars.len() && chars[i + 1] != '\n'
            {
                escape(&mut word, chars[i + 1]);
                i += 2;
                col += 2;
                continue;
            }
            word.push(c);
            i += 1;
            col += 1;
        }
        out.push(Token {
            kind: Kind::Word,
            text: word,
            quoted,
            line_start,
            pos: start,
        });
        line_start = false;
    }
    Ok(out)
}

/// nginx's escapes: `\"` `\'` `\\` `\t` `\r` `\n`; any other backslash is
/// kept (regexes such as `\.php$` need it).
fn escape(word: &mut String, n: char) {
    match n {
        'n' => word.push('\n'),
        't' => word.push('\t'),
        'r' => word.push('\r'),
        '"' | '\'' | '\\' => word.push(n),
        _ => {
            word.push('\\');
            word.push(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str, d: Dialect) -> Vec<(Kind, String, usize, usize, bool)> {
        tokenize(text, &Rc::from("t"), d)
            .unwrap()
            .into_iter()
            .map(|t| (t.kind, t.text, t.pos.line, t.pos.col, t.line_start))
            .collect()
    }

    #[test]
    fn nginx_words_punctuation_quotes_comments() {
        let t = toks(
            "server { listen 80; # c\n  return 200 \"a b\\\"\";set $x ${host}x\\.; }",
            Dialect::Nginx,
        );
        let words: Vec<&str> = t.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(
            words,
            [
                "server",
                "",
                "listen",
                "80",
                "",
                "return",
                "200",
                "a b\"",
                "",
                "set",
                "$x",
                "${host}x\\.",
                "",
                ""
            ]
        );
        assert_eq!(t[1].0, Kind::Open);
        assert_eq!(t[4].0, Kind::Semi);
        assert_eq!((t[5].2, t[5].3, t[5].4), (2, 3, true));
        assert_eq!(t[13].0, Kind::Close);
    }

    #[test]
    fn keepalived_bang_comments_and_no_semicolons() {
        let t = toks("a b ! x\n! y\nc d;e # z\n", Dialect::Keepalived);
        let words: Vec<(&str, bool)> = t.iter().map(|t| (t.1.as_str(), t.4)).collect();
        assert_eq!(
            words,
            [("a", true), ("b", false), ("c", true), ("d;e", false)]
        );
    }

    #[test]
    fn quote_errors_have_positions() {
        let e = tokenize("a \"b\n c", &Rc::from("f.conf"), Dialect::Nginx).unwrap_err();
        assert_eq!((e.line, e.col), (1, 3));
        assert!(e.message.contains("unterminated"), "{e}");
        let e = tokenize("a \"b\"c;", &Rc::from("f.conf"), Dialect::Nginx).unwrap_err();
        assert_eq!((e.line, e.col), (1, 6));
    }
}
