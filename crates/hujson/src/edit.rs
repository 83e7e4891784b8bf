//! Format-preserving edits. Each edit splices the text at the smallest span it can, then
//! re-parses, so the document is always valid and every byte outside the span is kept.

use crate::{Document, EditError, Node, Value};

/// One step of a path into a document: an object key or an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn path_string(path: &[Seg]) -> String {
    let mut out = String::from("$");
    for seg in path {
        match seg {
            Seg::Key(k) => out.push_str(&format!("[{}]", crate::quote(k))),
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The spans of a container's items: array elements, or object members from key to value.
fn item_spans(node: &Node) -> Vec<(usize, usize)> {
    match &node.value {
        Value::Array(elements) => elements.iter().map(|e| (e.start, e.end)).collect(),
        Value::Object(members) => members.iter().map(|m| (m.key_start, m.value.end)).collect(),
        _ => Vec::new(),
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl Document {
    /// The node at `path`, if there is one.
    pub fn get(&self, path: &[Seg]) -> Option<&Node> {
        let mut node = &self.root;
        for seg in path {
            node = match (seg, &node.value) {
                (Seg::Key(k), Value::Object(_)) => node.get(k)?,
                (Seg::Index(i), Value::Array(elements)) => elements.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The strings of the array at `path` (a policy group's members, say); `None` if there is
    /// no array there or it holds something other than strings.
    pub fn strings(&self, path: &[Seg]) -> Option<Vec<String>> {
        self.get(path)?
            .as_array()?
            .iter()
            .map(|n| self.str_value(n))
            .collect()
    }

    fn container(&self, path: &[Seg], expected: &'static str) -> Result<Node, EditError> {
        let node = self.get(path).ok_or_else(|| EditError::NotFound {
            path: path_string(path),
        })?;
        let ok = match expected {
            "array" => matches!(node.value, Value::Array(_)),
            _ => matches!(node.value, Value::Object(_)),
        };
        if !ok {
            return Err(EditError::WrongType {
                path: path_string(path),
                expected,
            });
        }
        Ok(node.clone())
    }

    /// Applies splices (non-overlapping, any order) and re-parses.
    fn splice(&mut self, mut edits: Vec<(usize, usize, String)>) -> Result<(), EditError> {
        // One pass over the text (edits do not overlap): replacing each range in place would
        // move the rest of the text once per edit, quadratic for thousands of removals.
        edits.sort_by_key(|e| e.0);
        let mut text = String::with_capacity(self.text.len());
        let mut copied = 0;
        for (start, end, with) in edits {
            let before = self.text.get(copied..start).ok_or(EditError::Overlapping)?;
            text.push_str(before);
            text.push_str(&with);
            copied = end;
        }
        text.push_str(&self.text[copied..]);
        // On a failed re-parse the document is left as it was.
        *self = Document::parse(&text).map_err(EditError::Corrupted)?;
        Ok(())
    }

    /// Adds `value` to the string array at `path` unless it is already there. Returns whether
    /// the document changed.
    pub fn add_string(&mut self, path: &[Seg], value: &str) -> Result<bool, EditError> {
        Ok(self.add_strings(path, &[value])? > 0)
    }

    /// Adds each of `values` not already in the string array at `path`, in one edit (one
    /// re-parse however many are added). Returns how many were added.
    pub fn add_strings(&mut self, path: &[Seg], values: &[&str]) -> Result<usize, EditError> {
        let array = self.container(path, "array")?;
        let present: std::collections::HashSet<String> = array
            .as_array()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| self.str_value(e))
            .collect();
        let mut new: Vec<String> = Vec::new();
        for value in values {
            let quoted = crate::quote(value);
            if !present.contains(*value) && !new.contains(&quoted) {
                new.push(quoted);
            }
        }
        if !new.is_empty() {
            self.insert_items(&array, &new)?;
        }
        Ok(new.len())
    }

    /// Removes every occurrence of `value` from the string array at `path`. Returns whether
    /// the document changed.
    pub fn remove_string(&mut self, path: &[Seg], value: &str) -> Result<bool, EditError> {
        let mut changed = false;
        loop {
            let array = self.container(path, "array")?;
            let found = array
                .as_array()
                .unwrap_or_default()
                .iter()
                .position(|e| self.str_value(e).as_deref() == Some(value));
            match found {
                Some(index) => {
                    self.remove_item(&array, index)?;
                    changed = true;
                }
                None => return Ok(changed),
            }
        }
    }

    /// Removes every occurrence of each of `values` from the string array at `path`. When each
    /// element to remove sits on its own line (the usual layout of a policy's groups) it is one
    /// edit and one re-parse however many go; otherwise they go one by one. Returns how many
    /// elements were removed.
    pub fn remove_strings(&mut self, path: &[Seg], values: &[&str]) -> Result<usize, EditError> {
        let wanted: std::collections::HashSet<&str> = values.iter().copied().collect();
        let array = self.container(path, "array")?;
        let elements = array.as_array().unwrap_or_default();
        let doomed: Vec<usize> = elements
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                self.str_value(e)
                    .is_some_and(|v| wanted.contains(v.as_str()))
            })
            .map(|(i, _)| i)
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let items = item_spans(&array);
        let bytes = self.text.as_bytes();
        let mut edits = Vec::new();
        let mut own_lines = true;
        for &index in &doomed {
            let (start, end) = items[index];
            let line_start = self.line_start(start);
            let after = self.comma_after(end).map_or(end, |c| c + 1);
            let eol = match self.end_of_line(after) {
                Some(eol) if bytes[line_start..start].iter().all(|&b| is_blank(b)) => eol,
                _ => {
                    own_lines = false;
                    break;
                }
            };
            let eol = eol + if bytes[eol] == b'\r' { 2 } else { 1 };
            let mut from = line_start;
            while from > 0 {
                let prev = self.line_start(from - 1);
                if prev <= array.start || !self.comment_only(prev, from) {
                    break;
                }
                from = prev;
            }
            edits.push((from, eol, String::new()));
        }
        if !own_lines {
            let mut removed = 0;
            for value in wanted {
                let before = self
                    .container(path, "array")?
                    .as_array()
                    .map_or(0, <[Node]>::len);
                self.remove_string(path, value)?;
                let after = self
                    .container(path, "array")?
                    .as_array()
                    .map_or(0, <[Node]>::len);
                removed += before - after;
            }
            return Ok(removed);
        }
        // The last element goes and the list had no trailing comma: drop the comma after the
        // new last element.
        let last = items.len() - 1;
        if doomed.last() == Some(&last)
            && self.comma_after(items[last].1).is_none()
            && let Some(keep) = (0..last).rev().find(|i| !doomed.contains(i))
            && let Some(comma) = self.comma_after(items[keep].1)
        {
            edits.push((comma, comma + 1, String::new()));
        }
        self.splice(edits)?;
        Ok(doomed.len())
    }

    /// Appends a value (given as HuJSON text) to the array at `path`.
    pub fn append(&mut self, path: &[Seg], value_text: &str) -> Result<(), EditError> {
        check_value(value_text)?;
        let array = self.container(path, "array")?;
        self.insert_item(&array, value_text)
    }

    /// Removes element `index` of the array at `path`.
    pub fn remove_index(&mut self, path: &[Seg], index: usize) -> Result<(), EditError> {
        let array = self.container(path, "array")?;
        if index >= item_spans(&array).len() {
            let mut full = path.to_vec();
            full.push(Seg::Index(index));
            return Err(EditError::NotFound {
                path: path_string(&full),
            });
        }
        self.remove_item(&array, index)
    }

    /// Sets property `key` of the object at `path` to a value given as HuJSON text, replacing
    /// only the old value's text if the key exists, else adding the member at the end.
    pub fn set(&mut self, path: &[Seg], key: &str, value_text: &str) -> Result<(), EditError> {
        check_value(value_text)?;
        let object = self.container(path, "object")?;
        match object.get(key) {
            Some(old) => self.splice(vec![(old.start, old.end, value_text.to_owned())]),
            None => self.insert_item(&object, &format!("{}: {value_text}", crate::quote(key))),
        }
    }

    /// Removes property `key` (every occurrence) from the object at `path`. Returns whether the
    /// document changed.
    pub fn remove(&mut self, path: &[Seg], key: &str) -> Result<bool, EditError> {
        let mut changed = false;
        loop {
            let object = self.container(path, "object")?;
            let found = object
                .as_object()
                .unwrap_or_default()
                .iter()
                .position(|m| m.key == key);
            match found {
                Some(index) => {
                    self.remove_item(&object, index)?;
                    changed = true;
                }
                None => return Ok(changed),
            }
        }
    }

    fn line_start(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |nl| nl + 1)
    }

    /// The whitespace that starts the line holding `offset`.
    fn indent_at(&self, offset: usize) -> &str {
        let start = self.line_start(offset);
        let bytes = self.text.as_bytes();
        let mut end = start;
        while end < offset && is_blank(bytes[end]) {
            end += 1;
        }
        &self.text[start..end]
    }

    fn newline(&self) -> &'static str {
        if self.text.contains("\r\n") {
            "\r\n"
        } else {
            "\n"
        }
    }

    /// One indentation step, guessed from the document.
    fn indent_unit(&self) -> &'static str {
        if self.text.contains("\n\t") {
            "\t"
        } else if self.text.contains("\n    \"") && !self.text.contains("\n  \"") {
            "    "
        } else {
            "  "
        }
    }

    /// The offset of the comma after the item ending at `end`, if one follows it.
    fn comma_after(&self, end: usize) -> Option<usize> {
        let mut parser = crate::parse::Parser::new(&self.text);
        parser.seek(end);
        parser.skip_trivia().ok()?;
        let next = parser.position();
        (self.text.as_bytes().get(next) == Some(&b',')).then_some(next)
    }

    /// The end of the comment that starts at `pos`, if one does.
    fn comment_at(&self, pos: usize) -> Option<usize> {
        let i = self.comments.binary_search_by_key(&pos, |c| c.0).ok()?;
        self.comments.get(i).map(|c| c.1)
    }

    /// Whether `from..to` holds only whitespace and at least one whole comment.
    fn comment_only(&self, from: usize, to: usize) -> bool {
        let bytes = self.text.as_bytes();
        let mut pos = from;
        let mut seen = false;
        while pos < to {
            if matches!(bytes[pos], b' ' | b'\t' | b'\r' | b'\n') {
                pos += 1;
                continue;
            }
            match self.comment_at(pos) {
                Some(end) if end <= to => {
                    pos = end;
                    seen = true;
                }
                _ => return false,
            }
        }
        seen
    }

    /// Where the line of an item ends: after blanks, `/* */` comments and a `//` comment on the
    /// same line, at the line break (`\r\n` or `\n`). `None` if something else follows on
    /// that line.
    fn end_of_line(&self, mut pos: usize) -> Option<usize> {
        let bytes = self.text.as_bytes();
        loop {
            while pos < bytes.len() && is_blank(bytes[pos]) {
                pos += 1;
            }
            let Some(end) = self.comment_at(pos) else {
                break;
            };
            if bytes[pos..].starts_with(b"//") {
                // A line comment ends after its line break: stop before that break.
                pos = end - 1;
                if pos > 0 && bytes[pos - 1] == b'\r' {
                    pos -= 1;
                }
                break;
            }
            if bytes[pos..end].contains(&b'\n') {
                break;
            }
            pos = end;
        }
        if bytes[pos..].starts_with(b"\r\n") || bytes[pos..].starts_with(b"\n") {
            Some(pos)
        } else {
            None
        }
    }

    fn insert_item(&mut self, container: &Node, item: &str) -> Result<(), EditError> {
        self.insert_items(container, &[item.to_owned()])
    }

    /// Inserts items (HuJSON text each) at the end of a container, in the container's layout:
    /// one per line with the last item's indentation, or on one line.
    fn insert_items(&mut self, container: &Node, new: &[String]) -> Result<(), EditError> {
        let items = item_spans(container);
        let open = container.start;
        let close = container.end - 1;
        let nl = self.newline();
        let Some(&(_, last_end)) = items.last() else {
            let inner = &self.text[open + 1..close];
            let edit = if inner.contains('\n') {
                let indent = format!("{}{}", self.indent_at(open), self.indent_unit());
                let item = new.join(&format!(",{nl}{indent}"));
                (open + 1, open + 1, format!("{nl}{indent}{item}"))
            } else if inner.bytes().all(is_blank) {
                (open + 1, close, new.join(", "))
            } else {
                (open + 1, open + 1, new.join(", "))
            };
            return self.splice(vec![edit]);
        };
        let multiline = self.text[open..items[0].0].contains('\n');
        let trailing = self.comma_after(last_end);
        if multiline {
            let last_start = items[items.len() - 1].0;
            let indent = self.indent_at(last_start).to_owned();
            let item = new.join(&format!(",{nl}{indent}"));
            let after = trailing.map_or(last_end, |c| c + 1);
            let at = self.end_of_line(after).unwrap_or(after);
            let mut edits = vec![];
            match trailing {
                Some(_) => edits.push((at, at, format!("{nl}{indent}{item},"))),
                // Nothing but the closing bracket follows the last item on its line: one
                // splice, so the comma cannot land after the new item.
                None if at == last_end => {
                    edits.push((at, at, format!(",{nl}{indent}{item}")));
                }
                None => {
                    edits.push((last_end, last_end, ",".to_owned()));
                    edits.push((at, at, format!("{nl}{indent}{item}")));
                }
            }
            self.splice(edits)
        } else {
            let space = match items.get(1) {
                Some(&(second, _)) if !self.text[items[0].1..second].contains(' ') => "",
                _ => " ",
            };
            let item = new.join(&format!(",{space}"));
            match trailing {
                Some(comma) => self.splice(vec![(comma + 1, comma + 1, format!("{space}{item},"))]),
                None => self.splice(vec![(last_end, last_end, format!(",{space}{item}"))]),
            }
        }
    }

    fn remove_item(&mut self, container: &Node, index: usize) -> Result<(), EditError> {
        let items = item_spans(container);
        let (start, end) = items[index];
        let bytes = self.text.as_bytes();
        let line_start = self.line_start(start);
        let own_line = bytes[line_start..start].iter().all(|&b| is_blank(b));
        let comma = self.comma_after(end);
        let after = comma.map_or(end, |c| c + 1);
        if own_line && let Some(eol) = self.end_of_line(after) {
            let eol = eol + if bytes[eol] == b'\r' { 2 } else { 1 };
            // Comment lines directly above the item belong to it.
            let mut from = line_start;
            while from > 0 {
                let prev = self.line_start(from - 1);
                if prev <= container.start || !self.comment_only(prev, from) {
                    break;
                }
                from = prev;
            }
            let mut edits = vec![(from, eol, String::new())];
            // Removing the last item: drop the comma after the new last one, unless the list
            // used trailing commas.
            if index + 1 == items.len()
                && index > 0
                && comma.is_none()
                && let Some(prev_comma) = self.comma_after(items[index - 1].1)
            {
                edits.push((prev_comma, prev_comma + 1, String::new()));
            }
            return self.splice(edits);
        }
        let edit = if index + 1 < items.len() {
            (start, items[index + 1].0)
        } else if index > 0 {
            (items[index - 1].1, end)
        } else {
            let mut to = after;
            while to < bytes.len() && is_blank(bytes[to]) {
                to += 1;
            }
            (start, to)
        };
        self.splice(vec![(edit.0, edit.1, String::new())])
    }
}

fn check_value(text: &str) -> Result<(), EditError> {
    Document::parse(text)
        .map(|_| ())
        .map_err(EditError::InvalidValue)
}
