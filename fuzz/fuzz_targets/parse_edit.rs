//! Parses arbitrary UTF-8 as HuJSON; when it parses, standardizes it and edits the root and
//! its first array and object children. Nothing may panic, and every edit on a value of the
//! right kind must succeed (an `EditError::Corrupted` would mean an edit produced bad text).

#![no_main]

use hujson::{Document, Node, Seg, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut doc = match Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            assert!(e.offset <= text.len() && text.is_char_boundary(e.offset));
            assert_eq!((e.line, e.column), hujson::line_col(text, e.offset));
            return;
        }
    };
    check_standard(&doc);

    let is_array = |n: &Node| matches!(n.value, Value::Array(_));
    let is_object = |n: &Node| matches!(n.value, Value::Object(_));
    let root = doc.root().clone();
    match &root.value {
        Value::Array(items) => {
            let first_array = items.iter().position(is_array);
            let first_object = items.iter().position(is_object);
            if let Some(i) = first_array {
                edit_array(&mut doc, &[Seg::Index(i)]);
            }
            if let Some(i) = first_object {
                edit_object(&mut doc, &[Seg::Index(i)]);
            }
            edit_array(&mut doc, &[]);
        }
        Value::Object(members) => {
            // A key lookup finds the last member with that key.
            let first_array = members
                .iter()
                .map(|m| &m.key)
                .find(|k| root.get(k).is_some_and(is_array));
            let first_object = members
                .iter()
                .map(|m| &m.key)
                .find(|k| root.get(k).is_some_and(is_object));
            if let Some(k) = first_array {
                edit_array(&mut doc, &[Seg::Key(k)]);
            }
            if let Some(k) = first_object.filter(|k| Some(*k) != first_array) {
                edit_object(&mut doc, &[Seg::Key(k)]);
            }
            edit_object(&mut doc, &[]);
        }
        _ => {}
    }
    check_standard(&doc);
});

fn check_standard(doc: &Document) {
    let plain = doc.standardize();
    assert_eq!(plain.len(), doc.text().len());
    let reparsed = Document::parse(&plain);
    assert!(reparsed.is_ok(), "standardize gave invalid JSON: {plain:?}");
}

fn edit_array(doc: &mut Document, path: &[Seg]) {
    assert!(doc.add_string(path, "fuzz \"member\"").is_ok());
    assert_eq!(doc.remove_string(path, "fuzz \"member\""), Ok(true));
    assert!(doc.append(path, "{\"a\": [1, /* c */ 2,]}").is_ok());
    let len = doc
        .get(path)
        .and_then(Node::as_array)
        .map_or(0, <[Node]>::len);
    assert!(doc.remove_index(path, len.saturating_sub(1)).is_ok());
    if len > 1 {
        assert!(doc.remove_index(path, 0).is_ok());
    }
    assert!(doc.remove_index(path, usize::MAX).is_err());
}

fn edit_object(doc: &mut Document, path: &[Seg]) {
    assert!(doc.set(path, "fuzz", "[]").is_ok());
    let mut inner = path.to_vec();
    inner.push(Seg::Key("fuzz"));
    assert_eq!(doc.add_string(&inner, "x"), Ok(true));
    assert_eq!(doc.add_string(&inner, "x"), Ok(false));
    assert!(doc.set(path, "fuzz", "null // c\n").is_ok());
    assert_eq!(doc.remove(path, "fuzz"), Ok(true));
    assert!(doc.add_string(path, "x").is_err());
}
