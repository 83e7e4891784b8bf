//! The strict HuJSON parser: RFC 8259 JSON plus comments and one trailing comma, nothing else.

use crate::{Document, Error, Member, Node, Value};

/// Deeper nesting than this is refused instead of risking the stack. The parser recurses, and an
/// unoptimized build uses about 3.5 KiB of stack per level, so 512 levels overflowed a 2 MiB
/// thread (the default for spawned threads and tests); 128 levels need under 0.5 MiB. Policy
/// files nest fewer than ten levels deep.
const MAX_DEPTH: usize = 128;

pub(crate) struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    comments: Vec<(usize, usize)>,
    trailing_commas: Vec<usize>,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            depth: 0,
            comments: Vec::new(),
            trailing_commas: Vec::new(),
        }
    }

    pub(crate) fn document(mut self) -> Result<Document, Error> {
        self.skip_trivia()?;
        let root = self.value()?;
        self.skip_trivia()?;
        if self.pos < self.bytes.len() {
            return Err(self.unexpected("after top-level value"));
        }
        Ok(Document {
            text: self.text.to_owned(),
            root,
            comments: self.comments,
            trailing_commas: self.trailing_commas,
        })
    }

    pub(crate) fn seek(&mut self, pos: usize) {
        self.pos = pos;
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    fn error(&self, at: usize, reason: String) -> Error {
        Error::at(self.text, at, reason)
    }

    fn eof(&self) -> Error {
        self.error(self.pos, "unexpected EOF".to_owned())
    }

    /// `invalid character 'x' <context>` at the current position, or EOF.
    fn unexpected(&self, context: &str) -> Error {
        match self.text[self.pos..].chars().next() {
            None => self.eof(),
            Some(c) => self.error(
                self.pos,
                format!("invalid character {} {context}", quote_char(c)),
            ),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips whitespace (SP, TAB, CR, LF only) and comments, recording the comments.
    pub(crate) fn skip_trivia(&mut self) -> Result<(), Error> {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'/' => {
                    let start = self.pos;
                    let end = match self.bytes.get(start + 1) {
                        Some(b'/') => find(self.bytes, start + 2, b"\n").map(|nl| nl + 1),
                        Some(b'*') => find(self.bytes, start + 2, b"*/").map(|e| e + 2),
                        _ => return Err(self.unexpected("looking for beginning of value")),
                    };
                    let Some(end) = end else {
                        return Err(self.error(start, "parsing comment: unexpected EOF".to_owned()));
                    };
                    self.comments.push((start, end));
                    self.pos = end;
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn value(&mut self) -> Result<Node, Error> {
        let start = self.pos;
        let value = match self.peek() {
            None => return Err(self.eof()),
            Some(b'{') => self.object()?,
            Some(b'[') => self.array()?,
            Some(b'"') => {
                self.string()?;
                Value::String
            }
            Some(b'-' | b'0'..=b'9') => {
                self.number()?;
                Value::Number
            }
            Some(b't') => self.literal("true", Value::Bool(true))?,
            Some(b'f') => self.literal("false", Value::Bool(false))?,
            Some(b'n') => self.literal("null", Value::Null)?,
            Some(_) => return Err(self.unexpected("at start of value")),
        };
        Ok(Node {
            start,
            end: self.pos,
            value,
        })
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(self.pos, format!("exceeded max depth of {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn object(&mut self) -> Result<Value, Error> {
        self.enter()?;
        self.pos += 1;
        let mut members = Vec::new();
        self.skip_trivia()?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Object(members));
        }
        loop {
            match self.peek() {
                Some(b'"') => {}
                Some(b',') => return Err(self.unexpected("at start of value")),
                _ => return Err(self.unexpected("at start of object name")),
            }
            let key_start = self.pos;
            self.string()?;
            let key = decode_string(&self.text[key_start + 1..self.pos - 1]);
            self.skip_trivia()?;
            if self.peek() != Some(b':') {
                return Err(self.unexpected("after object key"));
            }
            self.pos += 1;
            self.skip_trivia()?;
            let value = self.value()?;
            members.push(Member {
                key,
                key_start,
                value,
            });
            self.skip_trivia()?;
            match self.peek() {
                Some(b',') => {
                    let comma = self.pos;
                    self.pos += 1;
                    self.skip_trivia()?;
                    if self.peek() == Some(b'}') {
                        self.trailing_commas.push(comma);
                        self.pos += 1;
                        break;
                    }
                }
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.unexpected("after object key:value pair")),
            }
        }
        self.depth -= 1;
        Ok(Value::Object(members))
    }

    fn array(&mut self) -> Result<Value, Error> {
        self.enter()?;
        self.pos += 1;
        let mut elements = Vec::new();
        self.skip_trivia()?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Array(elements));
        }
        loop {
            elements.push(self.value()?);
            self.skip_trivia()?;
            match self.peek() {
                Some(b',') => {
                    let comma = self.pos;
                    self.pos += 1;
                    self.skip_trivia()?;
                    if self.peek() == Some(b']') {
                        self.trailing_commas.push(comma);
                        self.pos += 1;
                        break;
                    }
                }
                Some(b']') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.unexpected("after array element")),
            }
        }
        self.depth -= 1;
        Ok(Value::Array(elements))
    }

    fn string(&mut self) -> Result<(), Error> {
        self.pos += 1;
        loop {
            match self.peek() {
                None => return Err(self.eof()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        None => return Err(self.eof()),
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            self.pos += 1;
                            for _ in 0..4 {
                                match self.peek() {
                                    None => return Err(self.eof()),
                                    Some(h) if h.is_ascii_hexdigit() => self.pos += 1,
                                    Some(_) => {
                                        return Err(
                                            self.unexpected("in \\u hexadecimal character escape")
                                        );
                                    }
                                }
                            }
                        }
                        Some(_) => return Err(self.unexpected("in string escape code")),
                    }
                }
                Some(b) if b < 0x20 => return Err(self.unexpected("in string literal")),
                Some(_) => self.pos += 1,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), Error> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.unexpected("in numeric literal")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.unexpected("after decimal point in numeric literal"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.unexpected("in exponent of numeric literal"));
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, Error> {
        for expected in word.bytes() {
            match self.peek() {
                None => return Err(self.eof()),
                Some(b) if b == expected => self.pos += 1,
                Some(_) => return Err(self.unexpected(&format!("in literal {word}"))),
            }
        }
        Ok(value)
    }
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// A character quoted as Go's `strconv.QuoteRune` does, so messages match Tailscale's parser.
fn quote_char(c: char) -> String {
    let code = c as u32;
    match c {
        '\'' => "'\\''".to_owned(),
        '\\' => "'\\\\'".to_owned(),
        '\u{7}' => "'\\a'".to_owned(),
        '\u{8}' => "'\\b'".to_owned(),
        '\u{c}' => "'\\f'".to_owned(),
        '\n' => "'\\n'".to_owned(),
        '\r' => "'\\r'".to_owned(),
        '\t' => "'\\t'".to_owned(),
        '\u{b}' => "'\\v'".to_owned(),
        _ if code < 0x20 || code == 0x7f => format!("'\\x{code:02x}'"),
        _ if !is_print(c) && code < 0x10000 => format!("'\\u{code:04x}'"),
        _ if !is_print(c) => format!("'\\U{code:08x}'"),
        _ => format!("'{c}'"),
    }
}

/// Go's `unicode.IsPrint`, approximately: control, format, non-ASCII space and private-use
/// characters are not printable.
fn is_print(c: char) -> bool {
    !(c.is_control()
        || matches!(
            c,
            '\u{a0}'
                | '\u{ad}'
                | '\u{600}'..='\u{605}'
                | '\u{61c}'
                | '\u{6dd}'
                | '\u{70f}'
                | '\u{1680}'
                | '\u{180e}'
                | '\u{2000}'..='\u{200f}'
                | '\u{2028}'..='\u{202f}'
                | '\u{205f}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{3000}'
                | '\u{e000}'..='\u{f8ff}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0001}'
                | '\u{e0020}'..='\u{e007f}'
                | '\u{f0000}'..
        ))
}

/// Decodes the inside of a JSON string literal that the parser has already validated.
pub(crate) fn decode_string(raw: &str) -> String {
    if !raw.contains('\\') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let unit = hex4(&mut chars);
                if (0xD800..0xDC00).contains(&unit) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    let rest = chars.as_str();
                    if let Some(low_hex) = rest.strip_prefix("\\u") {
                        let mut low_chars = low_hex.chars();
                        let low = hex4(&mut low_chars);
                        if (0xDC00..0xE000).contains(&low) {
                            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                            chars = low_chars;
                            continue;
                        }
                    }
                    out.push('\u{FFFD}');
                } else {
                    out.push(char::from_u32(unit).unwrap_or('\u{FFFD}'));
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn hex4(chars: &mut std::str::Chars<'_>) -> u32 {
    let mut value = 0;
    for _ in 0..4 {
        value = value * 16 + chars.next().and_then(|c| c.to_digit(16)).unwrap_or(0);
    }
    value
}
