//! Strict HuJSON for Tailscale policy files.
//!
//! HuJSON is RFC 8259 JSON plus `//` and `/* */` comments and one optional trailing comma after
//! the last member or element; everything else (single quotes, unquoted keys, hex numbers, ...)
//! is refused, as Tailscale's own parser refuses it. A parsed [`Document`] keeps the original
//! text and the byte span of every value, so edits change only the bytes they must: comments,
//! indentation and key order elsewhere are kept exactly.

mod edit;
mod parse;

pub use edit::Seg;

/// A syntax error, with the 1-based line and byte column where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hujson: line {line}, column {column}: {reason}")]
pub struct Error {
    pub line: usize,
    pub column: usize,
    pub offset: usize,
    pub reason: String,
}

impl Error {
    pub(crate) fn at(text: &str, offset: usize, reason: String) -> Error {
        let (line, column) = line_col(text, offset);
        Error {
            line,
            column,
            offset,
            reason,
        }
    }
}

/// An edit that cannot be made (the path does not lead to the right kind of value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("{path}: no such value")]
    NotFound { path: String },
    #[error("{path}: expected {expected}")]
    WrongType {
        path: String,
        expected: &'static str,
    },
    #[error("new value is not valid HuJSON: {0}")]
    InvalidValue(Error),
    #[error("edit produced invalid HuJSON (this is a bug): {0}")]
    Corrupted(Error),
    #[error("overlapping edits (this is a bug)")]
    Overlapping,
}

/// 1-based line and byte column of `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |nl| nl + 1);
    (line, offset - line_start + 1)
}

/// Line starts of a text, for turning many byte offsets into lines and columns cheaply.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    /// 1-based line and byte column of `offset`.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line.saturating_sub(1)];
        (line, offset - start + 1)
    }
}

/// A value and the byte range `start..end` of its text (comments around it excluded).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub start: usize,
    pub end: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// The number's text is `document.text()[node.start..node.end]`.
    Number,
    /// The literal's text, quotes included, is `document.text()[node.start..node.end]`.
    String,
    Array(Vec<Node>),
    Object(Vec<Member>),
}

/// An object member: its decoded key, where the key's opening quote is, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub key: String,
    pub key_start: usize,
    pub value: Node,
}

impl Node {
    pub fn as_array(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Array(elements) => Some(elements),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[Member]> {
        match &self.value {
            Value::Object(members) => Some(members),
            _ => None,
        }
    }

    /// The value of member `key`, if this is an object that has it (the last one wins).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_object()?
            .iter()
            .rev()
            .find(|m| m.key == key)
            .map(|m| &m.value)
    }
}

/// A parsed HuJSON text.
#[derive(Debug, Clone)]
pub struct Document {
    text: String,
    root: Node,
    comments: Vec<(usize, usize)>,
    trailing_commas: Vec<usize>,
}

impl Document {
    pub fn parse(text: &str) -> Result<Document, Error> {
        parse::Parser::new(text).document()
    }

    /// The text, exactly as parsed or as left by the last edit.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn into_text(self) -> String {
        self.text
    }

    pub fn root(&self) -> &Node {
        &self.root
    }

    /// 1-based line and column of a byte offset in this document.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.text, offset)
    }

    /// The decoded string, if `node` is a string.
    pub fn str_value(&self, node: &Node) -> Option<String> {
        match node.value {
            Value::String => Some(parse::decode_string(
                &self.text[node.start + 1..node.end - 1],
            )),
            _ => None,
        }
    }

    /// The source text of a node.
    pub fn source(&self, node: &Node) -> &str {
        &self.text[node.start..node.end]
    }

    /// Byte ranges of every comment, in order.
    pub fn comments(&self) -> &[(usize, usize)] {
        &self.comments
    }

    /// Plain JSON with the same byte offsets: comment bytes and the trailing commas become
    /// spaces (line breaks and tabs inside comments are kept so lines and columns still match).
    pub fn standardize(&self) -> String {
        let mut bytes = self.text.clone().into_bytes();
        for &(start, end) in &self.comments {
            for b in &mut bytes[start..end] {
                if !matches!(*b, b'\n' | b'\r' | b'\t') {
                    *b = b' ';
                }
            }
        }
        for &comma in &self.trailing_commas {
            bytes[comma] = b' ';
        }
        // Only ASCII bytes of comments were replaced, but a comment can hold multi-byte UTF-8
        // whose bytes all became spaces, so the result is still valid UTF-8.
        String::from_utf8(bytes).unwrap_or_default()
    }
}

/// Parses HuJSON and returns the equivalent plain JSON (see [`Document::standardize`]).
pub fn standardize(text: &str) -> Result<String, Error> {
    Ok(Document::parse(text)?.standardize())
}

/// A JSON string literal for `s`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
