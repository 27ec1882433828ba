//! The NATS configuration file format (what `nats-server -c` reads), turned into a tree of
//! [`Value`]s that each remember the file, line and column they came from, so that the code
//! mapping the tree onto [`Config`](super::Config) can name the exact spot of a bad value.
//!
//! Accepted syntax, matched against nats-server 2.15 with `nats-server -c x.conf -t`:
//! `key: value`, `key = value` and `key value`; quoted or bare keys; `{ }` maps (the separator
//! before `{` is optional); `[ ]` arrays separated by `,` or new lines; `#` and `//` comments;
//! `,` or `;` after a value; `include <path>` (relative to the including file); `$NAME`
//! variables, looked up in the enclosing maps (innermost first, only keys defined earlier) and
//! then in the environment, whose value is itself parsed as a config value (`P=4k` is an integer).
//! An included file is parsed on its own (it does not see the includer's variables) and its keys
//! are merged into the map holding the `include`.
//!
//! Bare values are typed as nats-server types them: `true/false/yes/no/on/off` (any case) are
//! booleans; `-?digits` is an integer, optionally with a size suffix (decimal `k m g t p e`,
//! binary `kb ki kib`, `mb mi mib`, ... any case: `1k` is 1000 but `1KB` and `1KiB` are 1024);
//! `digits.digits` is a float; anything else (`0.0.0.0:4222`, `1e3`, `2006-01-02T15:04:05Z`) is a
//! string. Quoted values are always strings; `"..."` knows the escapes `\t \n \r \" \\ \xXX`,
//! `'...'` none.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Deepest nesting of maps, arrays, includes and variable expansions accepted; deeper input is
/// an error rather than a stack overflow (nats-server itself crashes on an include loop).
const MAX_DEPTH: usize = 64;

/// Where a key or value starts: file, 1-based line and 1-based column (in bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    /// The file the text came from, as it was named (included files: joined to the includer's
    /// directory).
    pub file: Arc<Path>,
    /// Line number, from 1.
    pub line: u32,
    /// Column number in bytes, from 1.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// A configuration value, without its position (see [`Item`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A quoted or bare string.
    String(String),
    /// An integer, size suffixes already applied.
    Int(i64),
    /// A number with a fractional part.
    Float(f64),
    /// `true/false/yes/no/on/off`.
    Bool(bool),
    /// A `{ }` block.
    Map(Map),
    /// A `[ ]` list.
    Array(Vec<Item>),
}

impl Value {
    /// A short description for error messages: `"abc"`, `42`, `a map`, ...
    pub fn describe(&self) -> String {
        match self {
            Value::String(s) => format!("{s:?}"),
            Value::Int(i) => i.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Map(_) => "a map".to_string(),
            Value::Array(_) => "an array".to_string(),
        }
    }
}

/// A value with the position it was written at (for a `$VAR`, where the reference was).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub pos: Pos,
}

/// One `key: value` of a [`Map`].
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key as written (nats-server matches option names case-insensitively).
    pub key: String,
    /// Where the key starts.
    pub pos: Pos,
    /// The value.
    pub item: Item,
    /// Whether a later `$key` referred to this entry; nats-server does not report such keys as
    /// unknown fields, since they are variables.
    pub used_as_variable: bool,
}

/// A map in file order; a repeated key replaces the earlier one, as in nats-server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Map {
    entries: Vec<Entry>,
}

impl Map {
    /// The entry with exactly this key.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The entries in the order they were first written.
    pub fn iter(&self) -> std::slice::Iter<'_, Entry> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, entry: Entry) {
        match self.entries.iter_mut().find(|e| e.key == entry.key) {
            Some(old) => *old = entry,
            None => self.entries.push(entry),
        }
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = &'a Entry;
    type IntoIter = std::slice::Iter<'a, Entry>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A configuration error: bad syntax, an unreadable file, or a bad value for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// Line (from 1), or 0 when the error is about the file as a whole.
    pub line: u32,
    /// Column (from 1), or 0 when unknown.
    pub col: u32,
    /// What is wrong, without the position.
    pub message: String,
}

impl ConfigError {
    /// An error at a position.
    pub fn at(pos: &Pos, message: impl Into<String>) -> Self {
        ConfigError {
            file: pos.file.to_path_buf(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
        }
    }

    /// An error about a whole file (it cannot be read, for instance).
    pub fn in_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: 0,
            col: 0,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.col) {
            (0, _) => write!(f, "{}: {}", self.file.display(), self.message),
            (line, 0) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            (line, col) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                line,
                col,
                self.message
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and parses a configuration file, following its includes.
pub fn parse_file(path: &Path) -> Result<Map, ConfigError> {
    parse_file_at_depth(path, 0)
}

/// Parses configuration text; `origin` names it in positions and is the base for relative
/// includes (its parent directory).
pub fn parse_str(src: &str, origin: &Path) -> Result<Map, ConfigError> {
    parse_document(src, origin, 0)
}

fn parse_file_at_depth(path: &Path, depth: usize) -> Result<Map, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::in_file(path, format!("cannot read file: {e}")))?;
    let src = String::from_utf8(bytes)
        .map_err(|_| ConfigError::in_file(path, "file is not valid UTF-8"))?;
    parse_document(&src, path, depth)
}

fn parse_document(src: &str, origin: &Path, depth: usize) -> Result<Map, ConfigError> {
    let mut p = Parser::new(src, Arc::from(origin), depth);
    p.scopes.push(Map::default());
    p.map_body(None)?;
    Ok(p.scopes.pop().unwrap_or_default())
}

/// A recursive-descent parser over one file's text. `scopes` holds the maps being built, the
/// outermost first; they are the variable scopes.
struct Parser<'a> {
    src: &'a str,
    at: usize,
    line: u32,
    line_start: usize,
    file: Arc<Path>,
    scopes: Vec<Map>,
    depth: usize,
}

fn ends_bare_value(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | ';' | '}' | ']')
}

fn ends_bare_key(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            ':' | '=' | '{' | '}' | '[' | ']' | ',' | ';' | '#' | '"' | '\''
        )
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, file: Arc<Path>, depth: usize) -> Self {
        let src = src.strip_prefix('\u{feff}').unwrap_or(src);
        Parser {
            src,
            at: 0,
            line: 1,
            line_start: 0,
            file,
            scopes: Vec::new(),
            depth,
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            file: self.file.clone(),
            line: self.line,
            col: (self.at - self.line_start + 1) as u32,
        }
    }

    fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.pos(), message)
    }

    fn peek(&self) -> Option<char> {
        self.src[self.at..].chars().next()
    }

    fn rest(&self) -> &'a str {
        &self.src[self.at..]
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.line_start = self.at;
        }
        Some(c)
    }

    fn enter(&mut self) -> Result<(), ConfigError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nesting too deep (include loop or variable cycle?)"));
        }
        Ok(())
    }

    /// Skips spaces and tabs, and a comment running to the end of the line, but not the new line.
    fn skip_blanks(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' {
                return;
            } else if c.is_whitespace() {
                self.bump();
            } else if c == '#' || self.rest().starts_with("//") {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.bump();
                }
            } else {
                return;
            }
        }
    }

    /// Skips blanks, comments and new lines, and with `separators` also stray `,` and `;`.
    fn skip_space(&mut self, separators: bool) {
        loop {
            self.skip_blanks();
            match self.peek() {
                Some('\n') => {}
                Some(',' | ';') if separators => {}
                _ => return,
            }
            self.bump();
        }
    }

    fn describe_next(&self) -> String {
        match self.peek() {
            None => "end of file".to_string(),
            Some('\n') => "a new line".to_string(),
            Some(c) => format!("{c:?}"),
        }
    }

    /// Parses `key value` statements into the innermost scope until `close` (or end of file at
    /// the top level, where `close` is `None`).
    fn map_body(&mut self, close: Option<char>) -> Result<(), ConfigError> {
        loop {
            self.skip_space(true);
            match (self.peek(), close) {
                (None, None) => return Ok(()),
                (None, Some(c)) => return Err(self.err(format!("expected {c:?}, got end of file"))),
                (Some(c), Some(want)) if c == want => {
                    self.bump();
                    return Ok(());
                }
                (Some(c @ ('}' | ']')), _) => return Err(self.err(format!("unexpected {c:?}"))),
                _ => self.statement(close)?,
            }
        }
    }

    fn statement(&mut self, close: Option<char>) -> Result<(), ConfigError> {
        let key_pos = self.pos();
        let (key, quoted) = self.key()?;
        self.skip_blanks();
        if !quoted
            && key == "include"
            && !matches!(self.peek(), None | Some(':' | '=' | '{' | '\n'))
        {
            return self.include(&key_pos, close);
        }
        if let Some(':' | '=') = self.peek() {
            self.bump();
            self.skip_blanks();
        }
        if matches!(self.peek(), None | Some('\n')) {
            return Err(self.err(format!(
                "{key}: expected a value, got {}",
                self.describe_next()
            )));
        }
        let item = self.value()?;
        self.end_of_value(&key, close)?;
        self.current().insert(Entry {
            key,
            pos: key_pos,
            item,
            used_as_variable: false,
        });
        Ok(())
    }

    fn current(&mut self) -> &mut Map {
        if self.scopes.is_empty() {
            self.scopes.push(Map::default());
        }
        let last = self.scopes.len() - 1;
        &mut self.scopes[last]
    }

    /// After a value: blanks, then a new line, `,`, `;`, the closing brace, or end of file.
    fn end_of_value(&mut self, key: &str, close: Option<char>) -> Result<(), ConfigError> {
        self.skip_blanks();
        match self.peek() {
            None | Some('\n' | ',' | ';') => Ok(()),
            Some(c) if Some(c) == close => Ok(()),
            _ => Err(self.err(format!(
                "{key}: expected a new line, ',' or ';' after the value, got {}",
                self.describe_next()
            ))),
        }
    }

    fn key(&mut self) -> Result<(String, bool), ConfigError> {
        match self.peek() {
            Some(q @ ('"' | '\'')) => Ok((self.quoted(q)?, true)),
            _ => {
                let start = self.at;
                while self.peek().is_some_and(|c| !ends_bare_key(c)) {
                    self.bump();
                }
                if self.at == start {
                    return Err(self.err(format!("expected a key, got {}", self.describe_next())));
                }
                Ok((self.src[start..self.at].to_string(), false))
            }
        }
    }

    fn include(&mut self, pos: &Pos, close: Option<char>) -> Result<(), ConfigError> {
        let name = match self.peek() {
            Some(q @ ('"' | '\'')) => self.quoted(q)?,
            _ => self.bare(),
        };
        self.end_of_value("include", close)?;
        let base = self.file.parent().unwrap_or(Path::new(""));
        let path = base.join(&name);
        if self.depth + 1 > MAX_DEPTH {
            return Err(ConfigError::at(
                pos,
                "include nesting too deep (include loop?)",
            ));
        }
        let included = parse_file_at_depth(&path, self.depth + 1).map_err(|e| {
            if e.line == 0 {
                ConfigError::at(pos, format!("include {name:?}: {}", e.message))
            } else {
                e
            }
        })?;
        let map = self.current();
        for entry in included.entries {
            map.insert(entry);
        }
        Ok(())
    }

    fn value(&mut self) -> Result<Item, ConfigError> {
        let pos = self.pos();
        let value = match self.peek() {
            Some('{') => {
                self.bump();
                self.enter()?;
                self.scopes.push(Map::default());
                let body = self.map_body(Some('}'));
                let map = self.scopes.pop().unwrap_or_default();
                body?;
                self.depth -= 1;
                Value::Map(map)
            }
            Some('[') => {
                self.bump();
                self.enter()?;
                let items = self.array()?;
                self.depth -= 1;
                Value::Array(items)
            }
            Some(q @ ('"' | '\'')) => Value::String(self.quoted(q)?),
            Some('$') => {
                self.bump();
                let name = self.bare();
                return self.variable(&name, pos);
            }
            _ => {
                let word = self.bare();
                if word.is_empty() {
                    return Err(self.err(format!("expected a value, got {}", self.describe_next())));
                }
                bare_value(&word).map_err(|m| ConfigError::at(&pos, m))?
            }
        };
        Ok(Item { value, pos })
    }

    fn array(&mut self) -> Result<Vec<Item>, ConfigError> {
        let mut items = Vec::new();
        loop {
            self.skip_space(false);
            match self.peek() {
                Some(']') => {
                    self.bump();
                    return Ok(items);
                }
                None => return Err(self.err("expected ']', got end of file")),
                Some(c @ ('}' | ',' | ';')) => return Err(self.err(format!("unexpected {c:?}"))),
                _ => {}
            }
            items.push(self.value()?);
            self.skip_blanks();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some('\n' | ']') => {}
                _ => {
                    return Err(self.err(format!(
                        "expected ',', a new line or ']' in an array, got {}",
                        self.describe_next()
                    )))
                }
            }
        }
    }

    fn bare(&mut self) -> String {
        let start = self.at;
        while self.peek().is_some_and(|c| !ends_bare_value(c)) {
            self.bump();
        }
        self.src[start..self.at].to_string()
    }

    fn quoted(&mut self, quote: char) -> Result<String, ConfigError> {
        let start = self.pos();
        self.bump();
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(ConfigError::at(&start, "unterminated quoted string"));
            };
            if c == quote {
                break;
            }
            if c != '\\' || quote == '\'' {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            let byte = match self.bump() {
                Some('t') => b'\t',
                Some('n') => b'\n',
                Some('r') => b'\r',
                Some('"') => b'"',
                Some('\\') => b'\\',
                Some('x') => {
                    let hex: String = (0..2).filter_map(|_| self.bump()).collect();
                    match u8::from_str_radix(&hex, 16) {
                        Ok(b) if hex.bytes().all(|c| c.is_ascii_hexdigit()) => b,
                        _ => return Err(self.err(format!("invalid escape \\x{hex}"))),
                    }
                }
                other => {
                    let shown = other.map_or("end of file".to_string(), |c| format!("{c:?}"));
                    return Err(self.err(format!(
                        "invalid escape character {shown}; allowed: \\xXX, \\t, \\n, \\r, \\\", \\\\"
                    )));
                }
            };
            out.push(byte);
        }
        String::from_utf8(out).map_err(|_| ConfigError::at(&start, "string is not valid UTF-8"))
    }

    /// Resolves `$name`: the nearest enclosing map defining it so far, else the environment.
    fn variable(&mut self, name: &str, pos: Pos) -> Result<Item, ConfigError> {
        if name.is_empty() {
            return Err(ConfigError::at(&pos, "expected a variable name after '$'"));
        }
        for scope in self.scopes.iter_mut().rev() {
            if let Some(entry) = scope.entries.iter_mut().find(|e| e.key == name) {
                entry.used_as_variable = true;
                return Ok(Item {
                    value: entry.item.value.clone(),
                    pos,
                });
            }
        }
        let Ok(text) = std::env::var(name) else {
            return Err(ConfigError::at(
                &pos,
                format!("variable reference for '{name}' can not be found"),
            ));
        };
        if self.depth + 1 > MAX_DEPTH {
            return Err(ConfigError::at(&pos, "variable expansion too deep"));
        }
        let value = env_value(&text, &self.file, self.depth + 1).map_err(|e| {
            ConfigError::at(
                &pos,
                format!(
                    "variable reference for '{name}' could not be parsed: {}",
                    e.message
                ),
            )
        })?;
        Ok(Item { value, pos })
    }
}

/// Parses an environment variable's text as one config value (nats-server does the same, so
/// `PORT=4333` gives an integer and `DEBUG=true` a boolean); empty text is an empty string.
fn env_value(text: &str, file: &Arc<Path>, depth: usize) -> Result<Value, ConfigError> {
    let mut p = Parser::new(text, file.clone(), depth);
    p.skip_blanks();
    if p.peek().is_none() {
        return Ok(Value::String(String::new()));
    }
    let item = p.value()?;
    p.skip_space(false);
    if p.peek().is_some() {
        return Err(p.err(format!("unexpected {} after the value", p.describe_next())));
    }
    Ok(item.value)
}

/// Types a bare word as nats-server does (see the module comment).
fn bare_value(word: &str) -> Result<Value, String> {
    match word.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => return Ok(Value::Bool(true)),
        "false" | "no" | "off" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let unsigned = word.strip_prefix('-').unwrap_or(word);
    let digits = unsigned.len()
        - unsigned
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .len();
    if digits == 0 {
        return Ok(Value::String(word.to_string()));
    }
    let (number, suffix) = word.split_at(word.len() - unsigned.len() + digits);
    if let Some(fraction) = suffix.strip_prefix('.') {
        if !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit()) {
            return word
                .parse()
                .map(Value::Float)
                .map_err(|_| format!("invalid number {word:?}"));
        }
        return Ok(Value::String(word.to_string()));
    }
    let Some(multiplier) = size_multiplier(suffix) else {
        return Ok(Value::String(word.to_string()));
    };
    number
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .map(Value::Int)
        .ok_or_else(|| format!("integer {word:?} is out of range"))
}

/// The factor a size suffix stands for. nats-server 2.15 (checked by observing INFO's
/// `max_payload`): a bare letter is decimal (`1k` = 1000, `1m` = 1000000), while `kb`/`ki`/
/// `kib` and so on are binary (`1KB` = `1KiB` = 1024); case does not matter; `b` alone is not a
/// suffix.
fn size_multiplier(suffix: &str) -> Option<i64> {
    if suffix.is_empty() {
        return Some(1);
    }
    let lower = suffix.to_ascii_lowercase();
    let mut chars = lower.chars();
    let power = match chars.next()? {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        'e' => 6,
        _ => return None,
    };
    let rest = chars.as_str();
    let base: i64 = match rest {
        "" => 1000,
        "b" | "i" | "ib" => 1024,
        _ => return None,
    };
    Some(base.pow(power))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Map {
        parse_str(src, Path::new("test.conf")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(src: &str) -> String {
        parse_str(src, Path::new("test.conf"))
            .expect_err("expected an error")
            .to_string()
    }

    fn val(map: &Map, key: &str) -> Value {
        map.get(key)
            .unwrap_or_else(|| panic!("no key {key}"))
            .item
            .value
            .clone()
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    #[test]
    fn separators_and_key_forms() {
        let m = parse("a: 1\nb = 2\nc 3\n\"d\": 4\n'e' = 5\nf:6; g=7, h 8\n");
        for (k, n) in [
            ("a", 1),
            ("b", 2),
            ("c", 3),
            ("d", 4),
            ("e", 5),
            ("f", 6),
            ("g", 7),
            ("h", 8),
        ] {
            assert_eq!(val(&m, k), Value::Int(n), "{k}");
        }
        assert_eq!(m.len(), 8);
    }

    #[test]
    fn comments() {
        let m = parse("# top\n// also\na: 1 # trailing\nb: 2 // trailing\nc: x#y\nd: a//b\n");
        assert_eq!(val(&m, "a"), Value::Int(1));
        assert_eq!(val(&m, "b"), Value::Int(2));
        // Inside a bare word, as in nats-server, `#` and `//` are not comments.
        assert_eq!(val(&m, "c"), s("x#y"));
        assert_eq!(val(&m, "d"), s("a//b"));
    }

    #[test]
    fn scalar_types() {
        let m = parse(
            "a: 0.0.0.0:4222\nb: localhost\nc: -5\nd: 1.5\ne: yes\nf: OFF\ng: True\n\
             h: 1e3\ni: 2006-01-02T15:04:05Z\nj: \"true\"\nk: '12'\nl: 10.0.0.1\nm: 1a\n",
        );
        assert_eq!(val(&m, "a"), s("0.0.0.0:4222"));
        assert_eq!(val(&m, "b"), s("localhost"));
        assert_eq!(val(&m, "c"), Value::Int(-5));
        assert_eq!(val(&m, "d"), Value::Float(1.5));
        assert_eq!(val(&m, "e"), Value::Bool(true));
        assert_eq!(val(&m, "f"), Value::Bool(false));
        assert_eq!(val(&m, "g"), Value::Bool(true));
        assert_eq!(val(&m, "h"), s("1e3"));
        assert_eq!(val(&m, "i"), s("2006-01-02T15:04:05Z"));
        assert_eq!(val(&m, "j"), s("true"));
        assert_eq!(val(&m, "k"), s("12"));
        assert_eq!(val(&m, "l"), s("10.0.0.1"));
        assert_eq!(val(&m, "m"), s("1a"));
    }

    #[test]
    fn size_suffixes_match_nats_server() {
        let cases = [
            ("1k", 1000),
            ("1K", 1000),
            ("1kb", 1024),
            ("1KB", 1024),
            ("1kB", 1024),
            ("1ki", 1024),
            ("1KiB", 1024),
            ("1m", 1_000_000),
            ("1MB", 1 << 20),
            ("1MiB", 1 << 20),
            ("2g", 2_000_000_000),
            ("1GB", 1 << 30),
            ("1T", 1_000_000_000_000),
            ("1TiB", 1 << 40),
            ("1P", 1_000_000_000_000_000),
            ("1PB", 1 << 50),
            ("1E", 1_000_000_000_000_000_000),
            ("1EB", 1 << 60),
            ("-1k", -1000),
            ("00012", 12),
        ];
        for (text, want) in cases {
            assert_eq!(
                val(&parse(&format!("v: {text}")), "v"),
                Value::Int(want),
                "{text}"
            );
        }
        // Not sizes: these stay strings, as in nats-server.
        for text in ["2b", "1kbx", "1_000", "1k5", "0x10"] {
            assert_eq!(val(&parse(&format!("v: {text}")), "v"), s(text), "{text}");
        }
        assert!(parse_err("v: 9EB").contains("out of range"));
        assert!(parse_err("v: 99999999999999999999").contains("out of range"));
    }

    #[test]
    fn quoted_strings() {
        let m = parse(
            "a: \"x\\ty\\n\\r\\\"\\\\\\x41\"\nb: 'raw\\t\"'\nc: \"two\nlines\"\nd: \"a b, c; d}\"\n",
        );
        assert_eq!(val(&m, "a"), s("x\ty\n\r\"\\A"));
        assert_eq!(val(&m, "b"), s("raw\\t\""));
        assert_eq!(val(&m, "c"), s("two\nlines"));
        assert_eq!(val(&m, "d"), s("a b, c; d}"));
        assert!(parse_err("a: \"x\\qy\"").contains("invalid escape"));
        assert!(parse_err("a: \"x\\u00e9\"").contains("invalid escape"));
        assert_eq!(
            parse_err("\na: \"open\n"),
            "test.conf:2:4: unterminated quoted string"
        );
    }

    #[test]
    fn maps_and_arrays() {
        let m = parse(
            "jetstream {\n  max_mem: 1G, store_dir: \"/tmp/x\"\n  inner = { a 1; b: [1, 2] }\n}\n\
             empty: {}\nlist: [\n  a\n  b, c\n  # comment\n  {x: 1}\n  [nested]\n]\nnone: []\n",
        );
        let Value::Map(js) = val(&m, "jetstream") else {
            panic!()
        };
        assert_eq!(val(&js, "max_mem"), Value::Int(1_000_000_000));
        assert_eq!(val(&js, "store_dir"), s("/tmp/x"));
        let Value::Map(inner) = val(&js, "inner") else {
            panic!()
        };
        assert_eq!(val(&inner, "a"), Value::Int(1));
        let Value::Array(b) = val(&inner, "b") else {
            panic!()
        };
        assert_eq!(b.len(), 2);
        assert_eq!(val(&m, "empty"), Value::Map(Map::default()));
        let Value::Array(list) = val(&m, "list") else {
            panic!()
        };
        let kinds: Vec<_> = list.iter().map(|i| i.value.describe()).collect();
        assert_eq!(kinds, ["\"a\"", "\"b\"", "\"c\"", "a map", "an array"]);
        assert_eq!(list[3].pos.line, 10);
        assert_eq!(val(&m, "none"), Value::Array(vec![]));
        // nats-server wants a separator between array elements on one line.
        assert!(parse_err("a: [1 2]").starts_with("test.conf:1:7: expected ','"));
    }

    #[test]
    fn positions() {
        let m = parse("\n  port: 4222\nblk {\n    x: \"y\"\n}\n");
        let port = m.get("port").unwrap();
        assert_eq!((port.pos.line, port.pos.col), (2, 3));
        assert_eq!((port.item.pos.line, port.item.pos.col), (2, 9));
        let Value::Map(blk) = val(&m, "blk") else {
            panic!()
        };
        let x = blk.get("x").unwrap();
        assert_eq!((x.pos.line, x.pos.col, x.item.pos.col), (4, 5, 8));
        assert_eq!(x.pos.to_string(), "test.conf:4:5");
    }

    #[test]
    fn repeated_key_replaces() {
        let m = parse("port: 1\nport: 2\n");
        assert_eq!(m.len(), 1);
        assert_eq!(val(&m, "port"), Value::Int(2));
        assert_eq!(m.get("port").unwrap().pos.line, 2);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        assert_eq!(
            parse_err("a: 1\nport: 4222 junk\n"),
            "test.conf:2:12: port: expected a new line, ',' or ';' after the value, got 'j'"
        );
        assert_eq!(
            parse_err("a: 1\nport:\n"),
            "test.conf:2:6: port: expected a value, got a new line"
        );
        assert_eq!(
            parse_err("port"),
            "test.conf:1:5: port: expected a value, got end of file"
        );
        assert_eq!(
            parse_err("a {\n b: 1\n"),
            "test.conf:3:1: expected '}', got end of file"
        );
        assert_eq!(parse_err("a: 1\n}\n"), "test.conf:2:1: unexpected '}'");
        assert_eq!(parse_err(":4222"), "test.conf:1:1: expected a key, got ':'");
        assert_eq!(
            parse_err("a: [1,\n"),
            "test.conf:2:1: expected ']', got end of file"
        );
        assert_eq!(parse_err("a: [,]"), "test.conf:1:5: unexpected ','");
    }

    #[test]
    fn variables() {
        let m =
            parse("SIZE: 2KB\nmax_payload: $SIZE\nblk { inner: $SIZE, SIZE: 1, again: $SIZE }\n");
        assert_eq!(val(&m, "max_payload"), Value::Int(2048));
        assert!(m.get("SIZE").unwrap().used_as_variable);
        assert!(!m.get("max_payload").unwrap().used_as_variable);
        let Value::Map(blk) = val(&m, "blk") else {
            panic!()
        };
        assert_eq!(val(&blk, "inner"), Value::Int(2048));
        // The innermost definition wins.
        assert_eq!(val(&blk, "again"), Value::Int(1));
        // The value's position is the reference's.
        assert_eq!(m.get("max_payload").unwrap().item.pos.line, 2);
        // Variables are case-sensitive, defined before use, and invisible outside their block.
        assert_eq!(
            parse_err("x: 1\nport: $X\n"),
            "test.conf:2:7: variable reference for 'X' can not be found"
        );
        assert!(parse_err("port: $V\nV: 1\n").contains("'V' can not be found"));
        assert!(parse_err("blk { V: 1 }\nport: $V\n").contains("test.conf:2:7:"));
        assert!(parse_err("port: $\n").contains("expected a variable name"));
    }

    #[test]
    fn environment_variables() {
        std::env::set_var("NATTER_PARSE_TEST_PORT", "4333");
        std::env::set_var("NATTER_PARSE_TEST_BOOL", "true");
        std::env::set_var("NATTER_PARSE_TEST_SIZE", "4k");
        std::env::set_var("NATTER_PARSE_TEST_STR", "\"a b\"");
        std::env::set_var("NATTER_PARSE_TEST_BAD", "a b");
        std::env::set_var("NATTER_PARSE_TEST_EMPTY", "");
        std::env::set_var("NATTER_PARSE_TEST_LOOP", "$NATTER_PARSE_TEST_LOOP");
        let m = parse(
            "a: $NATTER_PARSE_TEST_PORT\nb: $NATTER_PARSE_TEST_BOOL\nc: $NATTER_PARSE_TEST_SIZE\n\
             d: $NATTER_PARSE_TEST_STR\ne: $NATTER_PARSE_TEST_EMPTY\n",
        );
        assert_eq!(val(&m, "a"), Value::Int(4333));
        assert_eq!(val(&m, "b"), Value::Bool(true));
        assert_eq!(val(&m, "c"), Value::Int(4000));
        assert_eq!(val(&m, "d"), s("a b"));
        assert_eq!(val(&m, "e"), s(""));
        // A file variable shadows the environment.
        let m = parse("NATTER_PARSE_TEST_PORT: 1\na: $NATTER_PARSE_TEST_PORT\n");
        assert_eq!(val(&m, "a"), Value::Int(1));
        assert!(parse_err("\na: $NATTER_PARSE_TEST_BAD").starts_with(
            "test.conf:2:4: variable reference for 'NATTER_PARSE_TEST_BAD' could not be parsed"
        ));
        assert!(parse_err("a: $NATTER_PARSE_TEST_LOOP").contains("too deep"));
        assert!(parse_err("a: $NATTER_PARSE_TEST_UNSET_XYZ").contains("can not be found"));
    }

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir()
                .join(format!("natter-parse-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(dir.join("sub")).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn includes() {
        let dir = TempDir::new("includes");
        dir.write(
            "sub/limits.conf",
            "max_payload: 2KB\nSHARED: 7\ninclude ../leaf.conf\n",
        );
        dir.write("leaf.conf", "ping_max: 3\n");
        dir.write("sub/block.conf", "x: 1\n");
        let main = dir.write(
            "main.conf",
            "port: 1\ninclude sub/limits.conf\nfrom_include: $SHARED\n\
             blk { include \"sub/block.conf\" }\ninclude './leaf.conf'; port: 2\n",
        );
        let m = parse_file(&main).unwrap();
        assert_eq!(val(&m, "max_payload"), Value::Int(2048));
        assert_eq!(val(&m, "ping_max"), Value::Int(3));
        assert_eq!(val(&m, "from_include"), Value::Int(7));
        assert_eq!(val(&m, "port"), Value::Int(2));
        let Value::Map(blk) = val(&m, "blk") else {
            panic!()
        };
        assert_eq!(val(&blk, "x"), Value::Int(1));
        // Included entries keep their own file and line.
        let entry = m.get("max_payload").unwrap();
        assert!(entry.pos.file.ends_with("sub/limits.conf"));
        assert_eq!(entry.pos.line, 1);
        // `include:` with a separator is an ordinary key.
        let m = parse("include: x\n");
        assert_eq!(val(&m, "include"), s("x"));
    }

    #[test]
    fn include_errors() {
        let dir = TempDir::new("include-errors");
        let missing = dir.write("missing.conf", "a: 1\ninclude nope.conf\n");
        let err = parse_file(&missing).unwrap_err().to_string();
        assert!(
            err.contains("missing.conf:2:1: include \"nope.conf\": cannot read file"),
            "{err}"
        );
        dir.write("bad.conf", "a: 1\nb: [\n");
        let outer = dir.write("outer.conf", "include bad.conf\n");
        let err = parse_file(&outer).unwrap_err().to_string();
        assert!(err.contains("bad.conf:3:1: expected ']'"), "{err}");
        // An included file does not see the includer's variables (as in nats-server).
        dir.write("usesvar.conf", "b: $V\n");
        let scoped = dir.write("scoped.conf", "V: 1\ninclude usesvar.conf\n");
        let err = parse_file(&scoped).unwrap_err().to_string();
        assert!(
            err.contains("usesvar.conf:1:4: variable reference for 'V'"),
            "{err}"
        );
        let looped = dir.write("loop.conf", "include loop.conf\n");
        let err = parse_file(&looped).unwrap_err().to_string();
        assert!(err.contains("too deep"), "{err}");
        let err = parse_file(&dir.0.join("absent.conf")).unwrap_err();
        assert_eq!(err.line, 0);
        assert!(err.to_string().contains("absent.conf: cannot read file"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("a: {}", "[".repeat(10_000));
        assert!(parse_err(&deep).contains("nesting too deep"));
        let deep = format!("a: {}", "{b: ".repeat(10_000));
        assert!(parse_err(&deep).contains("nesting too deep"));
    }

    #[test]
    fn empty_and_blank_input() {
        assert!(parse("").is_empty());
        assert!(parse("\n\n  # only a comment\n;,\n").is_empty());
        assert_eq!(val(&parse("\u{feff}a: 1"), "a"), Value::Int(1));
        assert_eq!(val(&parse("a: 1\r\nb: 2\r\n"), "b"), Value::Int(2));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(src in "\\PC*") {
            let _ = parse_str(&src, Path::new("fuzz.conf"));
        }

        #[test]
        fn config_like_text_never_panics(src in "[a-z$\"'\\\\{}\\[\\]:=,;#/ \n\t0-9kKbB.-]{0,80}") {
            let _ = parse_str(&src, Path::new("fuzz.conf"));
        }
    }
}
