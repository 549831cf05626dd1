//! Tokens → a tree of directives, with `include` expanded in place.
//!
//! Both dialects produce the same [`Directive`] tree (name, arguments,
//! optional block), so the mappers in [`super::nginx`] and
//! [`super::keepalived`] walk plain data and never see syntax. The dialects
//! differ in one rule only: where a directive ends. nginx: at `;` or a
//! block. keepalived: at the end of the line or a block; a `{` alone on the
//! next line still opens the block of the directive above it, and a block
//! may sit on one line (`virtual_ipaddress { 192.168.1.100 }`), in which
//! case its words form one child line.
//!
//! `include` is resolved while parsing, so positions inside included files
//! stay exact. nginx resolves relative paths against the main file's
//! directory (its configuration prefix); keepalived against the directory of
//! the file holding the `include`. A `*` or `?` in the file-name part is a
//! glob (matches sorted by name; no match is fine, like nginx); a plain path
//! that does not exist stays in the tree as an `include` directive, which the
//! mappers report as not imported (a standard nginx.conf includes
//! `/etc/nginx/mime.types`, which need not exist where the import runs).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::lexer::{tokenize, Dialect, Kind, Pos, Token};
use crate::config::Diagnostic;

/// Includes nest at most this deep (a cycle would otherwise never end).
const MAX_INCLUDE_DEPTH: usize = 16;

#[derive(Debug, Clone)]
pub(crate) struct Arg {
    pub text: String,
    pub quoted: bool,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub(crate) struct Directive {
    pub name: String,
    pub args: Vec<Arg>,
    pub block: Option<Vec<Directive>>,
    pub pos: Pos,
}

impl Directive {
    pub(crate) fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(|a| a.text.as_str())
    }

    pub(crate) fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }

    /// The directive as it could be written back (block contents elided),
    /// for `# not imported:` comments.
    pub(crate) fn render(&self, dialect: Dialect) -> String {
        let mut s = self.name.clone();
        for a in &self.args {
            s.push(' ');
            if a.quoted || a.text.is_empty() || a.text.contains(char::is_whitespace) {
                s.push('"');
                s.push_str(&a.text.replace('\\', "\\\\").replace('"', "\\\""));
                s.push('"');
            } else {
                s.push_str(&a.text);
            }
        }
        match (&self.block, dialect) {
            (Some(b), _) if b.is_empty() => s.push_str(" { }"),
            (Some(_), _) => s.push_str(" { … }"),
            (None, Dialect::Nginx) => s.push(';'),
            (None, Dialect::Keepalived) => {}
        }
        s
    }
}

/// Where relative `include` paths are resolved.
struct Ctx {
    dialect: Dialect,
    /// nginx: the main file's directory.
    root_dir: PathBuf,
}

/// Reads and parses `path` with its includes.
pub(crate) fn parse_file(path: &Path, dialect: Dialect) -> Result<Vec<Directive>, Diagnostic> {
    let name: Rc<str> = Rc::from(path.display().to_string());
    let text = std::fs::read_to_string(path).map_err(|e| Diagnostic {
        file: name.to_string(),
        line: 1,
        col: 1,
        message: format!("cannot read file: {e}"),
    })?;
    parse_text(&text, &name, dialect)
}

/// Parses `text`; `name` is its file name (used for positions, and its
/// directory for relative includes).
pub(crate) fn parse_text(
    text: &str,
    name: &str,
    dialect: Dialect,
) -> Result<Vec<Directive>, Diagnostic> {
    let root_dir = dir_of(name);
    let ctx = Ctx { dialect, root_dir };
    parse_one(text, &Rc::from(name), &ctx, 0)
}

fn dir_of(name: &str) -> PathBuf {
    Path::new(name)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn parse_one(
    text: &str,
    file: &Rc<str>,
    ctx: &Ctx,
    depth: usize,
) -> Result<Vec<Directive>, Diagnostic> {
    let toks = tokenize(text, file, ctx.dialect)?;
    let mut p = Parser {
        toks,
        i: 0,
        ctx,
        depth,
        file_dir: dir_of(file),
        eof: eof_pos(text, file),
    };
    p.list(None)
}

fn eof_pos(text: &str, file: &Rc<str>) -> Pos {
    let line = text.split('\n').count();
    let col = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos {
        file: file.clone(),
        line,
        col,
    }
}

struct Parser<'a> {
    toks: Vec<Token>,
    i: usize,
    ctx: &'a Ctx,
    depth: usize,
    file_dir: PathBuf,
    eof: Pos,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.i)
    }

    /// Directives up to the `}` closing `open` (or the end of the file when
    /// `open` is None).
    fn list(&mut self, open: Option<&Pos>) -> Result<Vec<Directive>, Diagnostic> {
        let mut out: Vec<Directive> = Vec::new();
        loop {
            let Some(t) = self.peek().cloned() else {
                return match open {
                    Some(p) => Err(self.eof.diag(format!(
                        "unexpected end of file: the block opened at line {}:{} is not closed (missing `}}`)",
                        p.line, p.col
                    ))),
                    None => Ok(out),
                };
            };
            match t.kind {
                Kind::Close => {
                    self.i += 1;
                    return match open {
                        Some(_) => Ok(out),
                        None => Err(t.pos.diag("unexpected `}` (no block is open)")),
                    };
                }
                Kind::Semi => return Err(t.pos.diag("unexpected `;` (no directive before it)")),
                Kind::Open => {
                    // keepalived: `{` alone on the line after its directive.
                    let attach = self.ctx.dialect == Dialect::Keepalived
                        && out.last().is_some_and(|d| d.block.is_none());
                    if !attach {
                        return Err(t.pos.diag("unexpected `{` (no directive before it)"));
                    }
                    self.i += 1;
                    let block = self.list(Some(&t.pos))?;
                    if let Some(last) = out.last_mut() {
                        last.block = Some(block);
                    }
                }
                Kind::Word => {
                    let d = self.directive()?;
                    if d.name == "include" && d.block.is_none() {
                        out.extend(self.include(&d)?);
                    } else {
                        out.push(d);
                    }
                }
            }
        }
    }

    fn directive(&mut self) -> Result<Directive, Diagnostic> {
        let head = self.toks[self.i].clone();
        self.i += 1;
        let mut args = Vec::new();
        loop {
            let Some(t) = self.peek().cloned() else {
                if self.ctx.dialect == Dialect::Nginx {
                    return Err(self.eof.diag(format!(
                        "unexpected end of file: directive `{}` (line {}) needs `;` or `{{`",
                        head.text, head.pos.line
                    )));
                }
                return Ok(simple(head, args));
            };
            match (t.kind, self.ctx.dialect) {
                (Kind::Word, Dialect::Keepalived) if t.line_start => return Ok(simple(head, args)),
                (Kind::Word, _) => {
                    self.i += 1;
                    args.push(Arg {
                        text: t.text,
                        quoted: t.quoted,
                        pos: t.pos,
                    });
                }
                (Kind::Semi, _) => {
                    self.i += 1;
                    return Ok(simple(head, args));
                }
                (Kind::Close, Dialect::Keepalived) => return Ok(simple(head, args)),
                (Kind::Close, Dialect::Nginx) => {
                    return Err(t.pos.diag(format!(
                        "unexpected `}}`: directive `{}` (line {}) is not terminated by `;`",
                        head.text, head.pos.line
                    )))
                }
                (Kind::Open, _) => {
                    self.i += 1;
                    let block = self.list(Some(&t.pos))?;
                    let mut d = simple(head, args);
                    d.block = Some(block);
                    return Ok(d);
                }
            }
        }
    }

    fn include(&mut self, d: &Directive) -> Result<Vec<Directive>, Diagnostic> {
        let [arg] = d.args.as_slice() else {
            return Err(d.pos.diag("`include` takes exactly one file name or glob"));
        };
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(d.pos.diag(format!(
                "includes nested more than {MAX_INCLUDE_DEPTH} deep (does a file include itself?)"
            )));
        }
        let base = match self.ctx.dialect {
            Dialect::Nginx => &self.ctx.root_dir,
            Dialect::Keepalived => &self.file_dir,
        };
        let Some(files) = expand(base, &arg.text).map_err(|e| arg.pos.diag(e))? else {
            // Left in the tree: the mapper reports it as not imported.
            return Ok(vec![d.clone()]);
        };
        let mut out = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| {
                arg.pos
                    .diag(format!("cannot read included file {}: {e}", f.display()))
            })?;
            let name: Rc<str> = Rc::from(f.display().to_string());
            out.extend(parse_one(&text, &name, self.ctx, self.depth + 1)?);
        }
        Ok(out)
    }
}

fn simple(head: Token, args: Vec<Arg>) -> Directive {
    Directive {
        name: head.text,
        args,
        block: None,
        pos: head.pos,
    }
}

/// The files an include names: one path, or the sorted matches of a glob in
/// its last component; None when a plain path does not exist.
fn expand(base: &Path, pattern: &str) -> Result<Option<Vec<PathBuf>>, String> {
    let path = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let is_glob = |s: &str| s.contains(['*', '?', '[']);
    let file_part = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if is_glob(&dir.to_string_lossy()) {
        return Err(format!(
            "include {pattern:?}: wildcards are only supported in the file name, not in directories"
        ));
    }
    if !is_glob(&file_part) {
        if !path.exists() {
            return Ok(None);
        }
        return Ok(Some(vec![path]));
    }
    if file_part.contains('[') {
        return Err(format!(
            "include {pattern:?}: `[...]` globs are not supported; use `*` or `?`"
        ));
    }
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        // nginx: a glob matching nothing (even in a missing directory) is fine.
        Err(_) => return Ok(Some(Vec::new())),
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            glob_match(
                file_part.as_bytes(),
                e.file_name().to_string_lossy().as_bytes(),
            )
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    Ok(Some(found))
}

/// `*` (any run) and `?` (one byte); a leading `.` must be matched literally.
fn glob_match(pat: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pat.first() != Some(&b'.') {
        return false;
    }
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ds: &[Directive]) -> Vec<String> {
        ds.iter()
            .map(|d| {
                let args: Vec<&str> = d.args.iter().map(|a| a.text.as_str()).collect();
                let mut s = format!("{}({})", d.name, args.join(","));
                if let Some(b) = &d.block {
                    s.push_str(&format!("{{{}}}", names(b).join(" ")));
                }
                s
            })
            .collect()
    }

    #[test]
    fn nginx_tree() {
        let ds = parse_text(
            "http { upstream b { server 1.2.3.4:80 weight=2; } server { listen 80; } }",
            "n.conf",
            Dialect::Nginx,
        )
        .unwrap();
        assert_eq!(
            names(&ds),
            ["http(){upstream(b){server(1.2.3.4:80,weight=2)} server(){listen(80)}}"]
        );
    }

    #[test]
    fn keepalived_lines_and_blocks() {
        let text = "vrrp_instance VI_1 {\n  state MASTER\n  virtual_ipaddress { 10.0.0.1/24 dev eth0 }\n  track_script\n  {\n    chk\n  }\n}\nvrrp_script chk {\n script \"/bin/true x\"\n}\n";
        let ds = parse_text(text, "k.conf", Dialect::Keepalived).unwrap();
        assert_eq!(
            names(&ds),
            [
                "vrrp_instance(VI_1){state(MASTER) virtual_ipaddress(){10.0.0.1/24(dev,eth0)} track_script(){chk()}}",
                "vrrp_script(chk){script(/bin/true x)}"
            ]
        );
    }

    #[test]
    fn syntax_errors_point_at_the_problem() {
        let e = parse_text(
            "http {\n  server {\n    listen 80;\n  }\n",
            "n.conf",
            Dialect::Nginx,
        )
        .unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("n.conf", 5));
        assert!(e.message.contains("line 1:6"), "{e}");
        let e = parse_text("a b }", "n.conf", Dialect::Nginx).unwrap_err();
        assert_eq!((e.line, e.col), (1, 5));
        let e = parse_text("a;\n}", "n.conf", Dialect::Nginx).unwrap_err();
        assert_eq!((e.line, e.col), (2, 1));
        let e = parse_text("listen 80", "n.conf", Dialect::Nginx).unwrap_err();
        assert!(e.message.contains("needs `;`"), "{e}");
        let e = parse_text("x {\n}\n}\n", "k.conf", Dialect::Keepalived).unwrap_err();
        assert_eq!((e.line, e.col), (3, 1));
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*.conf", b"a.conf"));
        assert!(glob_match(b"a?c*", b"abcdef"));
        assert!(!glob_match(b"*.conf", b"a.conf.bak"));
        assert!(!glob_match(b"*", b".hidden"));
        assert!(glob_match(b"*a*b", b"xxaxxab"));
    }

    #[test]
    fn includes_resolve_with_globs() {
        let dir = std::env::temp_dir().join(format!("ringlb-import-syntax-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(dir.join("conf.d/b.conf"), "b 2;").unwrap();
        std::fs::write(dir.join("conf.d/a.conf"), "a 1;").unwrap();
        std::fs::write(dir.join("conf.d/skip.txt"), "nope;").unwrap();
        std::fs::write(
            dir.join("main.conf"),
            "http { include conf.d/*.conf; include none/*.conf; }",
        )
        .unwrap();
        let ds = parse_file(&dir.join("main.conf"), Dialect::Nginx).unwrap();
        assert_eq!(names(&ds), ["http(){a(1) b(2)}"]);
        assert!(ds[0].children()[1].pos.file.ends_with("conf.d/b.conf"));
        std::fs::write(dir.join("loop.conf"), "include loop.conf;").unwrap();
        let e = parse_file(&dir.join("loop.conf"), Dialect::Nginx).unwrap_err();
        assert!(e.message.contains("nested"), "{e}");
        std::fs::write(dir.join("missing.conf"), "\n  include nothere.conf;").unwrap();
        let ds = parse_file(&dir.join("missing.conf"), Dialect::Nginx).unwrap();
        assert_eq!(names(&ds), ["include(nothere.conf)"]);
        assert_eq!((ds[0].pos.line, ds[0].pos.col), (2, 3));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
