//! Tests for the strict HuJSON parser and its format-preserving edits.

// Test helpers outside `#[test]` functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hujson::{Document, EditError, Error, Seg, Value};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn parse(text: &str) -> Document {
    match Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => panic!("{text:?} should parse, got {e}"),
    }
}

fn parse_err(text: &str) -> Error {
    match Document::parse(text) {
        Ok(doc) => panic!("{text:?} should not parse, got {:?}", doc.root()),
        Err(e) => e,
    }
}

/// Asserts that `text` is refused with exactly `"line:column: reason"`.
#[track_caller]
fn assert_err(text: &str, expected: &str) {
    let e = parse_err(text);
    assert_eq!(
        format!("{}:{}: {}", e.line, e.column, e.reason),
        expected,
        "error for {text:?}"
    );
    assert_eq!(hujson::line_col(text, e.offset), (e.line, e.column));
    assert_eq!(
        e.to_string(),
        format!("hujson: line {}, column {}: {}", e.line, e.column, e.reason)
    );
    assert_eq!(hujson::standardize(text), Err(e));
}

fn json(text: &str) -> serde_json::Value {
    match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => panic!("not valid JSON ({e}): {text:?}"),
    }
}

/// Checks the standardize contract: valid JSON, same length, line breaks at the same offsets.
#[track_caller]
fn check_standardize(text: &str) -> serde_json::Value {
    let plain = parse(text).standardize();
    assert_eq!(
        plain.len(),
        text.len(),
        "standardize changed the length of {text:?}"
    );
    let lines = |s: &str| -> Vec<usize> { s.match_indices('\n').map(|(i, _)| i).collect() };
    assert_eq!(
        lines(&plain),
        lines(text),
        "standardize moved line breaks in {text:?}"
    );
    json(&plain)
}

const PROD: &[Seg] = &[Seg::Key("groups"), Seg::Key("group:prod")];

/// Runs `edit` on `before` and checks the exact text it leaves.
#[track_caller]
fn assert_edit<T: std::fmt::Debug + PartialEq>(
    before: &str,
    edit: impl FnOnce(&mut Document) -> Result<T, EditError>,
    result: T,
    after: &str,
) {
    let mut doc = parse(before);
    assert_eq!(edit(&mut doc), Ok(result), "edit result on {before:?}");
    assert_eq!(
        doc.text(),
        after,
        "\n--- before ---\n{before}\n--- after ---\n{}",
        doc.text()
    );
    // The result is valid HuJSON whose plain JSON is valid JSON.
    check_standardize(doc.text());
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn error_display_and_fields() {
    let e = parse_err("{\n  \"a\": 1,\n  b: 2\n}");
    assert_eq!(e.line, 3);
    assert_eq!(e.column, 3);
    assert_eq!(e.offset, 14);
    assert_eq!(e.reason, "invalid character 'b' at start of object name");
    assert_eq!(
        e.to_string(),
        "hujson: line 3, column 3: invalid character 'b' at start of object name"
    );
}

#[test]
fn error_column_counts_bytes() {
    // "é" is two bytes, so the bad character after it is in byte column 8, not 7.
    assert_err("[\"é\", x]", "1:8: invalid character 'x' at start of value");
    assert_err(
        "// héllo\n[\n\t1 2]",
        "3:4: invalid character '2' after array element",
    );
    // CR is not a line break for line counting; only LF is.
    assert_err(
        "[\r\n1,\r\n?]",
        "3:1: invalid character '?' at start of value",
    );
}

#[test]
fn errors_comments() {
    assert_err("null//", "1:5: parsing comment: unexpected EOF");
    assert_err("null // no newline", "1:6: parsing comment: unexpected EOF");
    assert_err("[1, /* open", "1:5: parsing comment: unexpected EOF");
    assert_err("/*/", "1:1: parsing comment: unexpected EOF");
    assert_err(
        "[1] /",
        "1:5: invalid character '/' looking for beginning of value",
    );
    assert_err(
        "[1 / 2]",
        "1:4: invalid character '/' looking for beginning of value",
    );
    assert_err(
        "# hash comment\n1",
        "1:1: invalid character '#' at start of value",
    );
}

#[test]
fn errors_commas() {
    assert_err("[,]", "1:2: invalid character ',' at start of value");
    assert_err("{,}", "1:2: invalid character ',' at start of value");
    assert_err("[1,,]", "1:4: invalid character ',' at start of value");
    assert_err("[1,,2]", "1:4: invalid character ',' at start of value");
    assert_err(
        "{\"a\":1,,}",
        "1:8: invalid character ',' at start of value",
    );
    assert_err("[1 2]", "1:4: invalid character '2' after array element");
    assert_err(
        "{\"a\":1 \"b\":2}",
        "1:8: invalid character '\"' after object key:value pair",
    );
    assert_err("1,", "1:2: invalid character ',' after top-level value");
    assert_err("{},", "1:3: invalid character ',' after top-level value");
    assert_err(
        "[1]\n// c\n,",
        "3:1: invalid character ',' after top-level value",
    );
    assert_err("1 2", "1:3: invalid character '2' after top-level value");
}

#[test]
fn errors_objects() {
    assert_err(
        "{null:1}",
        "1:2: invalid character 'n' at start of object name",
    );
    assert_err(
        "{a:1}",
        "1:2: invalid character 'a' at start of object name",
    );
    assert_err(
        "{'a':1}",
        "1:2: invalid character '\\'' at start of object name",
    );
    assert_err(
        "{1:1}",
        "1:2: invalid character '1' at start of object name",
    );
    assert_err("{\"a\" 1}", "1:6: invalid character '1' after object key");
    assert_err("{\"a\"=1}", "1:5: invalid character '=' after object key");
    assert_err("{\"a\":}", "1:6: invalid character '}' at start of value");
    assert_err("{\"a\":1", "1:7: unexpected EOF");
    assert_err(
        "{\"a\":1]",
        "1:7: invalid character ']' after object key:value pair",
    );
    assert_err("{", "1:2: unexpected EOF");
}

#[test]
fn errors_arrays_and_values() {
    assert_err("", "1:1: unexpected EOF");
    assert_err(" \n\t", "2:2: unexpected EOF");
    assert_err("// only a comment\n", "2:1: unexpected EOF");
    assert_err("[", "1:2: unexpected EOF");
    assert_err("[1", "1:3: unexpected EOF");
    assert_err("[1}", "1:3: invalid character '}' after array element");
    assert_err("]", "1:1: invalid character ']' at start of value");
    assert_err("nul", "1:4: unexpected EOF");
    assert_err("nulx", "1:4: invalid character 'x' in literal null");
    assert_err("True", "1:1: invalid character 'T' at start of value");
    assert_err("[tru]", "1:5: invalid character ']' in literal true");
    assert_err("falsey", "1:6: invalid character 'y' after top-level value");
    assert_err("undefined", "1:1: invalid character 'u' at start of value");
}

#[test]
fn errors_strings() {
    assert_err("\"abc", "1:5: unexpected EOF");
    assert_err("\"a\nb\"", "1:3: invalid character '\\n' in string literal");
    assert_err("\"a\tb\"", "1:3: invalid character '\\t' in string literal");
    assert_err(
        "\"a\u{0}b\"",
        "1:3: invalid character '\\x00' in string literal",
    );
    assert_err(
        "\"a\u{1f}b\"",
        "1:3: invalid character '\\x1f' in string literal",
    );
    assert_err(
        "\"\\x41\"",
        "1:3: invalid character 'x' in string escape code",
    );
    assert_err(
        "\"\\'\"",
        "1:3: invalid character '\\'' in string escape code",
    );
    assert_err(
        "\"\\u12G4\"",
        "1:6: invalid character 'G' in \\u hexadecimal character escape",
    );
    assert_err("\"\\u12", "1:6: unexpected EOF");
    assert_err("\"\\", "1:3: unexpected EOF");
    assert_err("'single'", "1:1: invalid character '\\'' at start of value");
}

#[test]
fn errors_numbers() {
    assert_err("0x1F", "1:2: invalid character 'x' after top-level value");
    assert_err("[0x1F]", "1:3: invalid character 'x' after array element");
    assert_err("+1", "1:1: invalid character '+' at start of value");
    assert_err("01", "1:2: invalid character '1' after top-level value");
    assert_err("-01", "1:3: invalid character '1' after top-level value");
    assert_err(".5", "1:1: invalid character '.' at start of value");
    assert_err("5.", "1:3: unexpected EOF");
    assert_err(
        "[5.]",
        "1:4: invalid character ']' after decimal point in numeric literal",
    );
    assert_err("1e", "1:3: unexpected EOF");
    assert_err(
        "[1e+]",
        "1:5: invalid character ']' in exponent of numeric literal",
    );
    assert_err("-", "1:2: unexpected EOF");
    assert_err("[-x]", "1:3: invalid character 'x' in numeric literal");
    assert_err("[- 1]", "1:3: invalid character ' ' in numeric literal");
    assert_err("NaN", "1:1: invalid character 'N' at start of value");
    assert_err("Infinity", "1:1: invalid character 'I' at start of value");
    assert_err("-Infinity", "1:2: invalid character 'I' in numeric literal");
    assert_err("[1_000]", "1:3: invalid character '_' after array element");
}

#[test]
fn errors_json5_whitespace_and_bom() {
    assert_err(
        "\u{feff}{}",
        "1:1: invalid character '\\ufeff' at start of value",
    );
    assert_err(
        "[1,\u{a0}2]",
        "1:4: invalid character '\\u00a0' at start of value",
    );
    assert_err(
        "[1\u{a0}]",
        "1:3: invalid character '\\u00a0' after array element",
    );
    assert_err(
        "[1,\u{2028}2]",
        "1:4: invalid character '\\u2028' at start of value",
    );
    assert_err(
        "[1,\u{b}2]",
        "1:4: invalid character '\\v' at start of value",
    );
    assert_err(
        "[1,\u{c}2]",
        "1:4: invalid character '\\f' at start of value",
    );
    assert_err(
        "[1,\u{7f}]",
        "1:4: invalid character '\\x7f' at start of value",
    );
    assert_err("[1,\\]", "1:4: invalid character '\\\\' at start of value");
    assert_err("[1,é]", "1:4: invalid character 'é' at start of value");
    assert_err(
        "[1,\u{1F600}]",
        "1:4: invalid character '\u{1F600}' at start of value",
    );
}

#[test]
fn errors_max_depth() {
    // 128 levels parse (and edit) on a test thread's 2 MiB stack even unoptimized.
    let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
    let mut doc = parse(&ok);
    doc.append(&[Seg::Index(0); 127], "1").unwrap();
    assert_eq!(
        doc.text(),
        format!("{}1{}", "[".repeat(128), "]".repeat(128))
    );
    assert!(matches!(
        doc.append(&[Seg::Index(0); 127], "[]"),
        Err(EditError::Corrupted(e)) if e.reason == "exceeded max depth of 128"
    ));
    let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
    assert_err(&deep, "1:129: exceeded max depth of 128");
    let deep_objects = "{\"a\":".repeat(130);
    assert_err(&deep_objects, "1:641: exceeded max depth of 128");
}

#[test]
fn standardize_error_is_the_parse_error() {
    assert_eq!(
        hujson::standardize("[1,,]").map_err(|e| e.to_string()),
        Err("hujson: line 1, column 4: invalid character ',' at start of value".to_owned())
    );
}

// ---------------------------------------------------------------------------------------------
// Valid inputs
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_json_values() {
    for (text, value) in [
        ("null", serde_json::json!(null)),
        ("true", serde_json::json!(true)),
        (" false ", serde_json::json!(false)),
        ("0", serde_json::json!(0)),
        ("-0.5e+10", serde_json::json!(-0.5e10)),
        ("1E-2", serde_json::json!(0.01)),
        (
            "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"",
            serde_json::json!("a\"b\\c/d\u{8}\u{c}\n\r\té😀"),
        ),
        ("[]", serde_json::json!([])),
        ("{}", serde_json::json!({})),
        (
            "{\"a\":[1,{\"b\":null}]}",
            serde_json::json!({"a": [1, {"b": null}]}),
        ),
    ] {
        assert_eq!(check_standardize(text), value, "{text:?}");
        assert_eq!(
            parse(text).standardize(),
            text,
            "plain JSON is its own standard form"
        );
    }
}

#[test]
fn comments_everywhere() {
    let text = "// head\n/* a */ { /* b */ \"k\" /* c */ : /* d */ [ /* e */ 1 /* f */ , // g\n 2 /* h */ ] /* i */ , \"m\" // j\n : // k\n true // l\n } // m\n/* n */";
    let doc = parse(text);
    let comments: Vec<&str> = doc.comments().iter().map(|&(s, e)| &text[s..e]).collect();
    assert_eq!(
        comments,
        [
            "// head\n",
            "/* a */",
            "/* b */",
            "/* c */",
            "/* d */",
            "/* e */",
            "/* f */",
            "// g\n",
            "/* h */",
            "/* i */",
            "// j\n",
            "// k\n",
            "// l\n",
            "// m\n",
            "/* n */",
        ]
    );
    assert_eq!(
        check_standardize(text),
        serde_json::json!({"k": [1, 2], "m": true})
    );
    assert_eq!(doc.text(), text);
}

#[test]
fn comment_contents_are_opaque() {
    let text = "[ /* \"]\" , // not a line comment */ 1, // /* not a block comment\n 2, /* multi\n line * / ** */ 3 /**/ ]";
    assert_eq!(check_standardize(text), serde_json::json!([1, 2, 3]));
    let text = "[\"// in a string\", \"/* also */\"] // é ✓ 😀\n";
    assert_eq!(
        check_standardize(text),
        serde_json::json!(["// in a string", "/* also */"])
    );
}

#[test]
fn one_trailing_comma() {
    for (text, value) in [
        ("[1,]", serde_json::json!([1])),
        ("[1, 2 ,\n]", serde_json::json!([1, 2])),
        ("{\"a\": 1,}", serde_json::json!({"a": 1})),
        ("{\"a\": [\"x\",], // c\n}", serde_json::json!({"a": ["x"]})),
        ("[1, /* c */ ]", serde_json::json!([1])),
        ("[[],{},]", serde_json::json!([[], {}])),
    ] {
        assert_eq!(check_standardize(text), value, "{text:?}");
    }
    assert_eq!(parse("[1,]").standardize(), "[1 ]");
    assert_eq!(parse("{\"a\":1, /*x*/}").standardize(), "{\"a\":1       }");
}

#[test]
fn standardize_keeps_offsets_lines_and_tabs() {
    let text = "{\r\n\t// é comment\r\n\t\"a\": 1, /* x\r\n\t y */\r\n}";
    let plain = parse(text).standardize();
    assert_eq!(
        plain,
        // "é" is two bytes, both blanked; the trailing comma is blanked too.
        "{\r\n\t             \r\n\t\"a\": 1      \r\n\t     \r\n}"
    );
    assert_eq!(json(&plain), serde_json::json!({"a": 1}));
    check_standardize(text);
}

#[test]
fn crlf_and_whitespace() {
    assert_eq!(
        check_standardize("\r\n[\r\n\t1 ,\r2\r\n]\r\n"),
        serde_json::json!([1, 2])
    );
}

#[test]
fn nodes_spans_and_accessors() {
    let text = "{ \"a\" : [1, \"x\\u00e9\"], // c\n \"b\": {\"c\": null}, \"a\": true }";
    let doc = parse(text);
    let root = doc.root();
    assert_eq!((root.start, root.end), (0, text.len()));
    let members = root.as_object().unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(members[0].key, "a");
    assert_eq!(
        &text[members[0].key_start..members[0].key_start + 3],
        "\"a\""
    );
    let first_a = &members[0].value;
    assert_eq!(doc.source(first_a), "[1, \"x\\u00e9\"]");
    let elements = first_a.as_array().unwrap();
    assert_eq!(elements[0].value, Value::Number);
    assert_eq!(doc.source(&elements[0]), "1");
    assert_eq!(doc.str_value(&elements[1]).as_deref(), Some("xé"));
    assert_eq!(doc.str_value(&elements[0]), None);
    // Duplicate keys: the last one wins for lookups.
    assert_eq!(root.get("a").map(|n| &n.value), Some(&Value::Bool(true)));
    assert_eq!(
        doc.get(&[Seg::Key("a")]).map(|n| &n.value),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        doc.get(&[Seg::Key("b"), Seg::Key("c")]).map(|n| &n.value),
        Some(&Value::Null)
    );
    assert!(doc.get(&[Seg::Key("b"), Seg::Index(0)]).is_none());
    assert!(doc.get(&[Seg::Key("zz")]).is_none());
    assert!(root.as_array().is_none());
    assert_eq!(doc.line_col(text.find("\"b\"").unwrap()), (2, 2));
    assert_eq!(doc.into_text(), text);
}

#[test]
fn syntax_only_like_go() {
    // Unpaired surrogate escapes are valid syntax and decode to U+FFFD, as in Go.
    let doc = parse("[\"\\ud800\", \"\\udc00x\", \"\\ud800\\u0041\", \"\\uD83D\\uDE00\"]");
    let strings: Vec<String> = doc
        .root()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| doc.str_value(n).unwrap())
        .collect();
    assert_eq!(strings, ["\u{fffd}", "\u{fffd}x", "\u{fffd}A", "😀"]);
    // Numbers are checked for syntax, not range.
    assert_eq!(parse("[1e999, -1e999]").standardize(), "[1e999, -1e999]");
}

#[test]
fn duplicate_keys() {
    assert_edit(
        "{\"a\": 1, \"a\": 2}",
        |d| d.set(&[], "a", "3"),
        (),
        "{\"a\": 1, \"a\": 3}",
    );
    assert_edit(
        "{\"a\": [\"x\"], \"a\": []}",
        |d| d.add_string(&[Seg::Key("a")], "x"),
        true,
        "{\"a\": [\"x\"], \"a\": [\"x\"]}",
    );
}

#[test]
fn quote_escapes_what_json_needs() {
    assert_eq!(
        hujson::quote("a\"b\\c\n\r\t\u{1}é/"),
        "\"a\\\"b\\\\c\\n\\r\\t\\u0001é/\""
    );
    assert_eq!(
        json(&hujson::quote("\u{7f}\u{2028}😀")),
        serde_json::json!("\u{7f}\u{2028}😀")
    );
}

// ---------------------------------------------------------------------------------------------
// Edits: adding group members
// ---------------------------------------------------------------------------------------------

const TAB_POLICY: &str = "{
\t// Groups of users.
\t\"groups\": {
\t\t\"group:prod\": [
\t\t\t\"alice@example.com\",
\t\t\t\"bob@example.com\",
\t\t],
\t\t\"group:dev\": [\"carol@example.com\"],
\t},
\t\"acls\": [
\t\t{\"action\": \"accept\", \"src\": [\"group:prod\"], \"dst\": [\"tag:prod:*\"]},
\t],
}
";

const SPACE_POLICY: &str = r#"{
  "groups": {
    "group:prod": [
      "alice@example.com",
      "bob@example.com"
    ]
  },
  "tagOwners": {
    "tag:prod": ["group:prod"]
  }
}
"#;

fn add(value: &'static str) -> impl FnOnce(&mut Document) -> Result<bool, EditError> {
    move |doc| doc.add_string(PROD, value)
}

fn remove(value: &'static str) -> impl FnOnce(&mut Document) -> Result<bool, EditError> {
    move |doc| doc.remove_string(PROD, value)
}

#[test]
fn add_member_tab_indented_with_trailing_comma() {
    assert_edit(
        TAB_POLICY,
        add("dave@example.com"),
        true,
        &TAB_POLICY.replace(
            "\t\t\t\"bob@example.com\",\n",
            "\t\t\t\"bob@example.com\",\n\t\t\t\"dave@example.com\",\n",
        ),
    );
}

#[test]
fn add_member_space_indented_without_trailing_comma() {
    assert_edit(
        SPACE_POLICY,
        add("dave@example.com"),
        true,
        r#"{
  "groups": {
    "group:prod": [
      "alice@example.com",
      "bob@example.com",
      "dave@example.com"
    ]
  },
  "tagOwners": {
    "tag:prod": ["group:prod"]
  }
}
"#,
    );
}

#[test]
fn add_member_escapes_the_value() {
    assert_edit(
        SPACE_POLICY,
        add("we\"ird\\name\n"),
        true,
        &SPACE_POLICY.replace(
            "\"bob@example.com\"\n",
            "\"bob@example.com\",\n      \"we\\\"ird\\\\name\\n\"\n",
        ),
    );
}

#[test]
fn add_member_single_line() {
    let before = "{\"groups\": {\"group:prod\": [\"alice@example.com\", \"bob@example.com\"]}}";
    assert_edit(
        before,
        add("dave@example.com"),
        true,
        "{\"groups\": {\"group:prod\": [\"alice@example.com\", \"bob@example.com\", \"dave@example.com\"]}}",
    );
    assert_edit(
        "{\"groups\": {\"group:prod\": [\"a\",\"b\"]}}",
        add("c"),
        true,
        "{\"groups\": {\"group:prod\": [\"a\",\"b\",\"c\"]}}",
    );
    assert_edit(
        "{\"groups\": {\"group:prod\": [\"a\"]}}",
        add("c"),
        true,
        "{\"groups\": {\"group:prod\": [\"a\", \"c\"]}}",
    );
}

#[test]
fn add_member_single_line_with_trailing_comma() {
    assert_edit(
        "{\"groups\": {\"group:prod\": [\"a\", \"b\",]}}",
        add("c"),
        true,
        "{\"groups\": {\"group:prod\": [\"a\", \"b\", \"c\",]}}",
    );
    assert_edit(
        "{\"groups\": {\"group:prod\": [\"a\",\"b\",]}}",
        add("c"),
        true,
        "{\"groups\": {\"group:prod\": [\"a\",\"b\",\"c\",]}}",
    );
}

#[test]
fn add_member_to_empty_list() {
    assert_edit(
        "{\"groups\": {\"group:prod\": []}}",
        add("a@x"),
        true,
        "{\"groups\": {\"group:prod\": [\"a@x\"]}}",
    );
    assert_edit(
        "{\"groups\": {\"group:prod\": [  ]}}",
        add("a@x"),
        true,
        "{\"groups\": {\"group:prod\": [\"a@x\"]}}",
    );
    assert_edit(
        "{\"groups\": {\"group:prod\": [/* none */]}}",
        add("a@x"),
        true,
        "{\"groups\": {\"group:prod\": [\"a@x\"/* none */]}}",
    );
    assert_edit(
        "{\n\t\"groups\": {\n\t\t\"group:prod\": [\n\t\t],\n\t},\n}\n",
        add("a@x"),
        true,
        "{\n\t\"groups\": {\n\t\t\"group:prod\": [\n\t\t\t\"a@x\"\n\t\t],\n\t},\n}\n",
    );
    assert_edit(
        "{\n  \"groups\": {\n    \"group:prod\": [\n    ]\n  }\n}\n",
        add("a@x"),
        true,
        "{\n  \"groups\": {\n    \"group:prod\": [\n      \"a@x\"\n    ]\n  }\n}\n",
    );
}

#[test]
fn add_member_after_line_comment() {
    assert_edit(
        "{\n  \"groups\": {\n    \"group:prod\": [\n      \"alice@example.com\",\n      \"bob@example.com\" // on call\n    ]\n  }\n}\n",
        add("dave@example.com"),
        true,
        "{\n  \"groups\": {\n    \"group:prod\": [\n      \"alice@example.com\",\n      \"bob@example.com\", // on call\n      \"dave@example.com\"\n    ]\n  }\n}\n",
    );
    assert_edit(
        "{\n\t\"groups\": {\n\t\t\"group:prod\": [\n\t\t\t\"alice@example.com\",\n\t\t\t\"bob@example.com\", // on call\n\t\t],\n\t},\n}\n",
        add("dave@example.com"),
        true,
        "{\n\t\"groups\": {\n\t\t\"group:prod\": [\n\t\t\t\"alice@example.com\",\n\t\t\t\"bob@example.com\", // on call\n\t\t\t\"dave@example.com\",\n\t\t],\n\t},\n}\n",
    );
}

#[test]
fn add_member_keeps_comment_lines_before_the_bracket() {
    // A comment on its own line after the last member stays after the new member.
    assert_edit(
        "{\"groups\": {\"group:prod\": [\n  \"a\",\n  // more to come\n]}}",
        add("b"),
        true,
        "{\"groups\": {\"group:prod\": [\n  \"a\",\n  \"b\",\n  // more to come\n]}}",
    );
}

#[test]
fn add_member_with_block_comment_after_last() {
    // Used to splice the comma after the new member and fail with "edit produced invalid".
    assert_edit(
        "{\"groups\": {\"group:prod\": [\n  \"a\" /* first */\n]}}",
        add("b"),
        true,
        "{\"groups\": {\"group:prod\": [\n  \"a\", /* first */\n  \"b\"\n]}}",
    );
}

#[test]
fn add_member_when_bracket_closes_on_the_last_line() {
    // Used to splice the comma after the new member and fail with "edit produced invalid".
    assert_edit(
        "{\"groups\": {\"group:prod\": [\n    \"a\",\n    \"b\"]}}",
        add("c"),
        true,
        "{\"groups\": {\"group:prod\": [\n    \"a\",\n    \"b\",\n    \"c\"]}}",
    );
    assert_edit(
        "{\"groups\": {\"group:prod\": [\n    \"a\", \"b\",]}}",
        add("c"),
        true,
        "{\"groups\": {\"group:prod\": [\n    \"a\", \"b\",\n    \"c\",]}}",
    );
}

#[test]
fn add_member_crlf() {
    // Used to put the new line between the comment's CR and LF.
    assert_edit(
        "{\r\n  \"groups\": {\r\n    \"group:prod\": [\r\n      \"a\" // c\r\n    ]\r\n  }\r\n}\r\n",
        add("b"),
        true,
        "{\r\n  \"groups\": {\r\n    \"group:prod\": [\r\n      \"a\", // c\r\n      \"b\"\r\n    ]\r\n  }\r\n}\r\n",
    );
    assert_edit(
        "{\r\n  \"groups\": {\r\n    \"group:prod\": [\r\n    ]\r\n  }\r\n}\r\n",
        add("b"),
        true,
        "{\r\n  \"groups\": {\r\n    \"group:prod\": [\r\n      \"b\"\r\n    ]\r\n  }\r\n}\r\n",
    );
}

#[test]
fn add_existing_member_is_a_no_op() {
    for text in [TAB_POLICY, SPACE_POLICY] {
        let mut doc = parse(text);
        assert_eq!(doc.add_string(PROD, "bob@example.com"), Ok(false));
        assert_eq!(doc.text(), text);
    }
    // Compared decoded: an escaped spelling of the same string counts as present.
    let text = "{\"groups\": {\"group:prod\": [\"\\u0062ob\"]}}";
    let mut doc = parse(text);
    assert_eq!(doc.add_string(PROD, "bob"), Ok(false));
    assert_eq!(doc.text(), text);
    // Adding twice adds once.
    let mut doc = parse(SPACE_POLICY);
    assert_eq!(doc.add_string(PROD, "x"), Ok(true));
    let once = doc.text().to_owned();
    assert_eq!(doc.add_string(PROD, "x"), Ok(false));
    assert_eq!(doc.text(), once);
}

#[test]
fn add_then_remove_restores_the_text() {
    for text in [TAB_POLICY, SPACE_POLICY] {
        let mut doc = parse(text);
        assert_eq!(doc.add_string(PROD, "new@example.com"), Ok(true));
        assert_eq!(doc.remove_string(PROD, "new@example.com"), Ok(true));
        assert_eq!(doc.text(), text);
    }
}

// ---------------------------------------------------------------------------------------------
// Edits: removing group members
// ---------------------------------------------------------------------------------------------

const COMMENTED: &str = "{
  \"groups\": {
    \"group:prod\": [
      \"alice@example.com\",
      // Bob is on leave until March.
      \"bob@example.com\",
      \"carol@example.com\" // lead
    ]
  }
}
";

#[test]
fn remove_member_on_its_own_line() {
    assert_edit(
        TAB_POLICY,
        remove("alice@example.com"),
        true,
        &TAB_POLICY.replace("\t\t\t\"alice@example.com\",\n", ""),
    );
    assert_edit(
        SPACE_POLICY,
        remove("alice@example.com"),
        true,
        &SPACE_POLICY.replace("      \"alice@example.com\",\n", ""),
    );
}

#[test]
fn remove_member_takes_the_comment_line_above() {
    assert_edit(
        COMMENTED,
        remove("bob@example.com"),
        true,
        "{
  \"groups\": {
    \"group:prod\": [
      \"alice@example.com\",
      \"carol@example.com\" // lead
    ]
  }
}
",
    );
    // Only comment lines directly above go: a blank line stops it.
    assert_edit(
        "{\"groups\": {\"group:prod\": [\n  // about the list\n\n  /* bob */ // more\n  \"bob\",\n  \"x\"\n]}}",
        remove("bob"),
        true,
        "{\"groups\": {\"group:prod\": [\n  // about the list\n\n  \"x\"\n]}}",
    );
}

#[test]
fn remove_last_member_keeps_the_list_valid() {
    assert_edit(
        COMMENTED,
        remove("carol@example.com"),
        true,
        "{
  \"groups\": {
    \"group:prod\": [
      \"alice@example.com\",
      // Bob is on leave until March.
      \"bob@example.com\"
    ]
  }
}
",
    );
    assert_edit(
        SPACE_POLICY,
        remove("bob@example.com"),
        true,
        &SPACE_POLICY.replace(
            "\"alice@example.com\",\n      \"bob@example.com\"\n",
            "\"alice@example.com\"\n",
        ),
    );
    // With trailing commas, the previous comma stays.
    assert_edit(
        TAB_POLICY,
        remove("bob@example.com"),
        true,
        &TAB_POLICY.replace("\t\t\t\"bob@example.com\",\n", ""),
    );
}

#[test]
fn remove_only_member_multi_line() {
    assert_edit(
        "{\"groups\": {\"group:prod\": [\n    \"a\"\n  ]}}",
        remove("a"),
        true,
        "{\"groups\": {\"group:prod\": [\n  ]}}",
    );
}

#[test]
fn remove_member_single_line() {
    let doc = |list: &str| format!("{{\"groups\": {{\"group:prod\": {list}}}}}");
    for (list, value, after) in [
        ("[\"a\", \"b\", \"c\"]", "a", "[\"b\", \"c\"]"),
        ("[\"a\", \"b\", \"c\"]", "b", "[\"a\", \"c\"]"),
        ("[\"a\", \"b\", \"c\"]", "c", "[\"a\", \"b\"]"),
        ("[\"a\"]", "a", "[]"),
        ("[ \"a\" ]", "a", "[ ]"),
        ("[\"a\",]", "a", "[]"),
        ("[\"a\", \"b\",]", "b", "[\"a\",]"),
        ("[\"a\",\"b\",\"c\"]", "b", "[\"a\",\"c\"]"),
        ("[\"a\", \"b\", \"a\"]", "a", "[\"b\"]"),
    ] {
        let value: &'static str = Box::leak(value.to_owned().into_boxed_str());
        assert_edit(&doc(list), remove(value), true, &doc(after));
    }
}

#[test]
fn remove_member_sharing_a_line() {
    assert_edit(
        "{\"groups\": {\"group:prod\": [\n  \"a\", \"b\",\n  \"c\"\n]}}",
        remove("a"),
        true,
        "{\"groups\": {\"group:prod\": [\n  \"b\",\n  \"c\"\n]}}",
    );
    assert_edit(
        "{\"groups\": {\"group:prod\": [\n  \"a\", \"b\",\n  \"c\"\n]}}",
        remove("b"),
        true,
        "{\"groups\": {\"group:prod\": [\n  \"a\", \"c\"\n]}}",
    );
    // A line with a comment and a member is not a comment line.
    assert_edit(
        "[\n  /* a */ \"x\", /* b */\n  \"y\"\n]",
        |d| d.remove_string(&[], "y"),
        true,
        "[\n  /* a */ \"x\" /* b */\n]",
    );
}

#[test]
fn remove_member_crlf() {
    assert_edit(
        "{\r\n  \"groups\": {\r\n    \"group:prod\": [\r\n      \"a\",\r\n      // c\r\n      \"b\" // d\r\n    ]\r\n  }\r\n}\r\n",
        remove("b"),
        true,
        "{\r\n  \"groups\": {\r\n    \"group:prod\": [\r\n      \"a\"\r\n    ]\r\n  }\r\n}\r\n",
    );
}

#[test]
fn remove_absent_member_is_a_no_op() {
    let mut doc = parse(COMMENTED);
    assert_eq!(doc.remove_string(PROD, "nobody@example.com"), Ok(false));
    assert_eq!(doc.text(), COMMENTED);
}

// ---------------------------------------------------------------------------------------------
// Edits: objects, append, remove_index
// ---------------------------------------------------------------------------------------------

#[test]
fn set_new_property_multi_line() {
    assert_edit(
        SPACE_POLICY,
        |d| d.set(&[], "ssh", "[]"),
        (),
        r#"{
  "groups": {
    "group:prod": [
      "alice@example.com",
      "bob@example.com"
    ]
  },
  "tagOwners": {
    "tag:prod": ["group:prod"]
  },
  "ssh": []
}
"#,
    );
    assert_edit(
        TAB_POLICY,
        |d| d.set(&[Seg::Key("groups")], "group:new", "[\"x@example.com\"]"),
        (),
        &TAB_POLICY.replace(
            "\t\t\"group:dev\": [\"carol@example.com\"],\n",
            "\t\t\"group:dev\": [\"carol@example.com\"],\n\t\t\"group:new\": [\"x@example.com\"],\n",
        ),
    );
}

#[test]
fn set_new_property_single_line_and_empty() {
    assert_edit(
        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"]}]}",
        |d| d.set(&[Seg::Key("acls"), Seg::Index(0)], "proto", "\"tcp\""),
        (),
        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"proto\": \"tcp\"}]}",
    );
    assert_edit("{}", |d| d.set(&[], "a b", "1"), (), "{\"a b\": 1}");
    assert_edit(
        "{\n  \"tagOwners\": {\n  }\n}",
        |d| d.set(&[Seg::Key("tagOwners")], "tag:x", "[]"),
        (),
        "{\n  \"tagOwners\": {\n    \"tag:x\": []\n  }\n}",
    );
}

#[test]
fn set_replaces_only_the_value() {
    let before = "{\n  // Who may approve.\n  \"autoApprovers\": /* keep */ {\"routes\": {}}, // trailing\n  \"x\": 1\n}";
    assert_edit(
        before,
        |d| d.set(&[], "autoApprovers", "{\"exitNode\": [\"tag:exit\"]}"),
        (),
        "{\n  // Who may approve.\n  \"autoApprovers\": /* keep */ {\"exitNode\": [\"tag:exit\"]}, // trailing\n  \"x\": 1\n}",
    );
    assert_edit(
        before,
        |d| d.set(&[], "x", "[1, 2, /* c */]"),
        (),
        "{\n  // Who may approve.\n  \"autoApprovers\": /* keep */ {\"routes\": {}}, // trailing\n  \"x\": [1, 2, /* c */]\n}",
    );
}

#[test]
fn remove_property() {
    assert_edit(
        SPACE_POLICY,
        |d| d.remove(&[], "tagOwners"),
        true,
        r#"{
  "groups": {
    "group:prod": [
      "alice@example.com",
      "bob@example.com"
    ]
  }
}
"#,
    );
    assert_edit(
        TAB_POLICY,
        |d| d.remove(&[], "groups"),
        true,
        "{
\t\"acls\": [
\t\t{\"action\": \"accept\", \"src\": [\"group:prod\"], \"dst\": [\"tag:prod:*\"]},
\t],
}
",
    );
    assert_edit(
        "{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}",
        |d| d.remove(&[], "src"),
        true,
        "{\"action\": \"accept\", \"dst\": [\"*:*\"]}",
    );
    assert_edit(
        "{\"a\": 1, \"b\": 2, \"a\": 3}",
        |d| d.remove(&[], "a"),
        true,
        "{\"b\": 2}",
    );
    assert_edit("{\"a\": 1}", |d| d.remove(&[], "b"), false, "{\"a\": 1}");
}

#[test]
fn append_and_remove_index() {
    assert_edit(
        TAB_POLICY,
        |d| d.append(&[Seg::Key("acls")], "{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22\"]}"),
        (),
        &TAB_POLICY.replace(
            "\t\t{\"action\": \"accept\", \"src\": [\"group:prod\"], \"dst\": [\"tag:prod:*\"]},\n",
            "\t\t{\"action\": \"accept\", \"src\": [\"group:prod\"], \"dst\": [\"tag:prod:*\"]},\n\t\t{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22\"]},\n",
        ),
    );
    assert_edit("[1, 2]", |d| d.append(&[], "null"), (), "[1, 2, null]");
    assert_edit(
        TAB_POLICY,
        |d| d.remove_index(&[Seg::Key("acls")], 0),
        (),
        &TAB_POLICY.replace(
            "\t\t{\"action\": \"accept\", \"src\": [\"group:prod\"], \"dst\": [\"tag:prod:*\"]},\n",
            "",
        ),
    );
    assert_edit(
        "[1, {\"a\": 2}, 3]",
        |d| d.remove_index(&[], 1),
        (),
        "[1, 3]",
    );
}

// ---------------------------------------------------------------------------------------------
// Edit errors
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_edit_err<T: std::fmt::Debug>(
    text: &str,
    edit: impl FnOnce(&mut Document) -> Result<T, EditError>,
    message: &str,
) {
    let mut doc = parse(text);
    match edit(&mut doc) {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => assert_eq!(e.to_string(), message),
    }
    assert_eq!(
        doc.text(),
        text,
        "a failed edit must not change the document"
    );
}

#[test]
fn edit_errors() {
    let groups_missing = &[Seg::Key("groups"), Seg::Key("group:nope")];
    assert_edit_err(
        SPACE_POLICY,
        |d| d.add_string(groups_missing, "x"),
        "$[\"groups\"][\"group:nope\"]: no such value",
    );
    assert_edit_err(
        SPACE_POLICY,
        |d| d.remove_string(groups_missing, "x"),
        "$[\"groups\"][\"group:nope\"]: no such value",
    );
    assert_edit_err(
        SPACE_POLICY,
        |d| d.add_string(&[Seg::Key("groups")], "x"),
        "$[\"groups\"]: expected array",
    );
    assert_edit_err(
        SPACE_POLICY,
        |d| d.add_string(&[], "x"),
        "$: expected array",
    );
    assert_edit_err(
        SPACE_POLICY,
        |d| d.set(PROD, "k", "1"),
        "$[\"groups\"][\"group:prod\"]: expected object",
    );
    assert_edit_err(
        SPACE_POLICY,
        |d| d.remove(PROD, "k"),
        "$[\"groups\"][\"group:prod\"]: expected object",
    );
    assert_edit_err(
        SPACE_POLICY,
        |d| d.add_string(&[Seg::Key("groups"), Seg::Index(0)], "x"),
        "$[\"groups\"][0]: no such value",
    );
    assert_edit_err(
        SPACE_POLICY,
        |d| {
            d.add_string(
                &[
                    Seg::Key("groups"),
                    Seg::Key("group:prod"),
                    Seg::Index(0),
                    Seg::Key("x"),
                ],
                "x",
            )
        },
        "$[\"groups\"][\"group:prod\"][0][\"x\"]: no such value",
    );
    assert_edit_err(
        SPACE_POLICY,
        |d| d.remove_index(PROD, 2),
        "$[\"groups\"][\"group:prod\"][2]: no such value",
    );
    assert_edit_err(
        SPACE_POLICY,
        |d| d.append(PROD, "[1,,]"),
        "new value is not valid HuJSON: hujson: line 1, column 4: invalid character ',' at start of value",
    );
    assert_edit_err(
        SPACE_POLICY,
        |d| d.append(PROD, ""),
        "new value is not valid HuJSON: hujson: line 1, column 1: unexpected EOF",
    );
    assert_edit_err(
        SPACE_POLICY,
        |d| d.set(&[], "k", "1 2"),
        "new value is not valid HuJSON: hujson: line 1, column 3: invalid character '2' after top-level value",
    );
    assert_edit_err(
        SPACE_POLICY,
        |d| d.set(&[], "k", "1 // c"),
        "new value is not valid HuJSON: hujson: line 1, column 3: parsing comment: unexpected EOF",
    );

    let mut doc = parse(SPACE_POLICY);
    assert_eq!(
        doc.add_string(&[Seg::Key("nope")], "x"),
        Err(EditError::NotFound {
            path: "$[\"nope\"]".to_owned()
        })
    );
    assert_eq!(
        doc.set(&[Seg::Key("groups"), Seg::Key("group:prod")], "k", "1"),
        Err(EditError::WrongType {
            path: "$[\"groups\"][\"group:prod\"]".to_owned(),
            expected: "object"
        })
    );
    assert!(matches!(
        doc.append(&[], "'x'"),
        Err(EditError::InvalidValue(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

mod props {
    use hujson::{Document, EditError, Node, Seg, Value};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;
    use proptest::test_runner::FileFailurePersistence;

    /// A generated JSON value. Numbers keep their text so that the same text is compared.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Gen {
        Null,
        Bool(bool),
        Num(String),
        Str(String),
        Arr(Vec<Gen>),
        Obj(Vec<(String, Gen)>),
    }

    impl Gen {
        pub fn to_json(&self) -> serde_json::Value {
            match self {
                Gen::Null => serde_json::Value::Null,
                Gen::Bool(b) => serde_json::Value::Bool(*b),
                Gen::Num(text) => serde_json::from_str(text).unwrap(),
                Gen::Str(s) => serde_json::Value::String(s.clone()),
                Gen::Arr(items) => items.iter().map(Gen::to_json).collect(),
                Gen::Obj(members) => serde_json::Value::Object(
                    members
                        .iter()
                        .map(|(k, v)| (k.clone(), v.to_json()))
                        .collect(),
                ),
            }
        }

        fn get_mut(&mut self, path: &[P]) -> Option<&mut Gen> {
            let mut g = self;
            for seg in path {
                g = match (seg, g) {
                    (P::K(k), Gen::Obj(members)) => {
                        &mut members.iter_mut().find(|(mk, _)| mk == k)?.1
                    }
                    (P::I(i), Gen::Arr(items)) => items.get_mut(*i)?,
                    _ => return None,
                };
            }
            Some(g)
        }

        /// Paths of every array and object, this one first.
        fn containers(&self, path: &mut Vec<P>, out: &mut Vec<Vec<P>>) {
            match self {
                Gen::Arr(items) => {
                    out.push(path.clone());
                    for (i, item) in items.iter().enumerate() {
                        path.push(P::I(i));
                        item.containers(path, out);
                        path.pop();
                    }
                }
                Gen::Obj(members) => {
                    out.push(path.clone());
                    for (k, v) in members {
                        path.push(P::K(k.clone()));
                        v.containers(path, out);
                        path.pop();
                    }
                }
                _ => {}
            }
        }
    }

    /// An owned path step.
    #[derive(Debug, Clone, PartialEq)]
    pub enum P {
        K(String),
        I(usize),
    }

    fn segs(path: &[P]) -> Vec<Seg<'_>> {
        path.iter()
            .map(|p| match p {
                P::K(k) => Seg::Key(k),
                P::I(i) => Seg::Index(*i),
            })
            .collect()
    }

    fn arb_char() -> impl Strategy<Value = char> {
        prop_oneof![
            6 => proptest::char::range('a', 'z'),
            3 => select(vec![
                '"', '\\', '/', '\n', '\r', '\t', '\u{0}', '\u{8}', '\u{c}', '\u{1f}', '\u{7f}',
                '\u{2028}', '\u{a0}', '\u{feff}', 'é', '€', '😀', ' ', '*', ',', ':', '[', '{',
                '@',
            ]),
            1 => any::<char>(),
        ]
    }

    pub fn arb_string() -> impl Strategy<Value = String> {
        vec(arb_char(), 0..8).prop_map(|chars| chars.into_iter().collect())
    }

    fn arb_number() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            prop_oneof![Just(0u64), 1u64..10, 10u64..100_000, any::<u64>()],
            proptest::option::of(vec(0u8..10, 1..5)),
            proptest::option::of((select(vec!["e", "E"]), select(vec!["", "+", "-"]), 0u8..40)),
        )
            .prop_map(|(neg, int, frac, exp)| {
                let mut s = String::new();
                if neg {
                    s.push('-');
                }
                s.push_str(&int.to_string());
                if let Some(frac) = frac {
                    s.push('.');
                    s.extend(frac.iter().map(|d| char::from(b'0' + d)));
                }
                if let Some((e, sign, digits)) = exp {
                    s.push_str(&format!("{e}{sign}{digits}"));
                }
                s
            })
    }

    fn dedup(members: Vec<(String, Gen)>) -> Vec<(String, Gen)> {
        let mut out: Vec<(String, Gen)> = Vec::new();
        for (k, v) in members {
            if !out.iter().any(|(ok, _)| *ok == k) {
                out.push((k, v));
            }
        }
        out
    }

    pub fn arb_gen() -> impl Strategy<Value = Gen> {
        let leaf = prop_oneof![
            Just(Gen::Null),
            any::<bool>().prop_map(Gen::Bool),
            arb_number().prop_map(Gen::Num),
            arb_string().prop_map(Gen::Str),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Gen::Arr),
                vec((arb_string(), inner), 0..6).prop_map(|m| Gen::Obj(dedup(m))),
            ]
        })
    }

    fn arb_object() -> impl Strategy<Value = Gen> {
        vec((arb_string(), arb_gen()), 0..6).prop_map(|m| Gen::Obj(dedup(m)))
    }

    /// Prints a [`Gen`] as HuJSON with random layout and trivia, recording where it put
    /// comments and trailing commas.
    pub struct Printer {
        rng: u64,
        pub out: String,
        pub comments: Vec<(usize, usize)>,
        pub trailing: Vec<usize>,
        nl: &'static str,
        unit: &'static str,
    }

    const COMMENT_WORDS: &[&str] = &[
        "note",
        "TODO: fix",
        " ",
        "é ✓ 😀",
        "/",
        "*",
        "**",
        "//",
        "/*",
        "\"quoted\"",
        "[1,",
        "}",
        "\t",
    ];

    impl Printer {
        pub fn new(seed: u64) -> Printer {
            let mut p = Printer {
                rng: seed | 1,
                out: String::new(),
                comments: Vec::new(),
                trailing: Vec::new(),
                nl: "\n",
                unit: "  ",
            };
            if p.chance(4) {
                p.nl = "\r\n";
            }
            p.unit = p.pick(&["  ", "    ", "\t"]);
            p
        }

        pub fn print(g: &Gen, seed: u64) -> Printer {
            let mut p = Printer::new(seed);
            p.top(g);
            p
        }

        pub fn top(&mut self, g: &Gen) {
            self.gap(true, 0, 3);
            self.value(g, 0);
            self.gap(true, 0, 3);
        }

        fn next(&mut self) -> u64 {
            // xorshift64
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng
        }

        fn chance(&mut self, n: u64) -> bool {
            self.next().is_multiple_of(n)
        }

        fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
            xs[(self.next() % xs.len() as u64) as usize]
        }

        fn at_line_start(&self) -> bool {
            self.out.is_empty() || self.out.ends_with('\n')
        }

        fn comment_text(&mut self) -> String {
            let mut s = String::new();
            for _ in 0..self.next() % 4 {
                s.push_str(self.pick(COMMENT_WORDS));
            }
            s.replace("*/", "* /")
        }

        fn line_comment(&mut self) {
            let start = self.out.len();
            let text = self.comment_text();
            self.out.push_str("//");
            self.out.push_str(&text);
            self.out.push_str(self.nl);
            self.comments.push((start, self.out.len()));
        }

        fn block_comment(&mut self, multiline: bool) {
            let start = self.out.len();
            let a = self.comment_text();
            self.out.push_str("/*");
            self.out.push_str(&a);
            if multiline {
                let b = self.comment_text();
                self.out.push_str(self.nl);
                self.out.push_str(&b);
            }
            if self.out.ends_with('/') && self.out.len() - start == 3 {
                // "/*/" + "*/" would be fine, but keep "/*" + "/" from reading as "/*/".
                self.out.push(' ');
            }
            self.out.push_str("*/");
            self.comments.push((start, self.out.len()));
        }

        /// Random trivia, present about once in `rarity` calls. With `newlines`, it may hold
        /// line breaks and line comments (and then ends with indentation for `level`).
        fn gap(&mut self, newlines: bool, level: usize, rarity: u64) {
            if !self.chance(rarity) {
                return;
            }
            for _ in 0..1 + self.next() % 3 {
                match self.next() % if newlines { 7 } else { 3 } {
                    0 => self.out.push(' '),
                    1 => self.out.push('\t'),
                    2 => self.block_comment(false),
                    3 => self.block_comment(true),
                    4 => self.line_comment(),
                    _ => self.out.push_str(self.nl),
                }
            }
            if self.at_line_start() {
                self.indent(level);
            }
        }

        fn indent(&mut self, level: usize) {
            for _ in 0..level {
                self.out.push_str(self.unit);
            }
        }

        fn hex4(&mut self, unit: u32) {
            let upper = self.chance(2);
            if upper {
                self.out.push_str(&format!("\\u{unit:04X}"));
            } else {
                self.out.push_str(&format!("\\u{unit:04x}"));
            }
        }

        pub fn string(&mut self, s: &str) {
            self.out.push('"');
            for c in s.chars() {
                let short = match c {
                    '\u{8}' => Some("\\b"),
                    '\u{c}' => Some("\\f"),
                    '\n' => Some("\\n"),
                    '\r' => Some("\\r"),
                    '\t' => Some("\\t"),
                    _ => None,
                };
                match c {
                    '"' => self.out.push_str("\\\""),
                    '\\' => self.out.push_str("\\\\"),
                    '/' if self.chance(2) => self.out.push_str("\\/"),
                    _ if short.is_some() && self.chance(2) => {
                        self.out.push_str(short.unwrap_or_default())
                    }
                    _ if (c as u32) < 0x20 || self.chance(8) => {
                        let mut units = [0u16; 2];
                        for unit in c.encode_utf16(&mut units) {
                            self.hex4(u32::from(*unit));
                        }
                    }
                    _ => self.out.push(c),
                }
            }
            self.out.push('"');
        }

        pub fn value(&mut self, g: &Gen, level: usize) {
            match g {
                Gen::Null => self.out.push_str("null"),
                Gen::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
                Gen::Num(text) => self.out.push_str(text),
                Gen::Str(s) => self.string(s),
                Gen::Arr(items) => {
                    let items: Vec<(Option<&str>, &Gen)> =
                        items.iter().map(|g| (None, g)).collect();
                    self.container('[', ']', level, &items);
                }
                Gen::Obj(members) => {
                    let items: Vec<(Option<&str>, &Gen)> =
                        members.iter().map(|(k, g)| (Some(k.as_str()), g)).collect();
                    self.container('{', '}', level, &items);
                }
            }
        }

        fn item(&mut self, key: Option<&str>, g: &Gen, level: usize, newlines: bool) {
            if let Some(key) = key {
                self.string(key);
                self.gap(newlines, level + 1, 6);
                self.out.push(':');
                if self.chance(2) {
                    self.out.push(' ');
                }
                self.gap(newlines, level + 1, 6);
            }
            self.value(g, level);
        }

        fn container(
            &mut self,
            open: char,
            close: char,
            level: usize,
            items: &[(Option<&str>, &Gen)],
        ) {
            let trailing = !items.is_empty() && self.chance(3);
            let multiline = self.chance(2);
            self.out.push(open);
            if !multiline {
                let spaced = self.chance(2);
                let rarity = if spaced { 4 } else { 12 };
                if spaced {
                    self.out.push(' ');
                }
                for (i, &(key, g)) in items.iter().enumerate() {
                    self.gap(false, 0, rarity);
                    self.item(key, g, level, false);
                    self.gap(false, 0, rarity);
                    let last = i + 1 == items.len();
                    if !last || trailing {
                        if last {
                            self.trailing.push(self.out.len());
                        }
                        self.out.push(',');
                        if spaced {
                            self.out.push(' ');
                        }
                    }
                }
                self.gap(false, 0, rarity);
                self.out.push(close);
                return;
            }
            // Multi-line: one item a line mostly, comments above and after items.
            if self.chance(6) {
                self.out.push(' ');
                self.line_comment();
            }
            for (i, &(key, g)) in items.iter().enumerate() {
                if !self.at_line_start() {
                    if i > 0 && self.chance(8) {
                        self.out.push(' ');
                    } else {
                        self.out.push_str(self.nl);
                    }
                }
                if self.at_line_start() {
                    if self.chance(10) {
                        self.out.push_str(self.nl);
                    }
                    if self.chance(4) {
                        self.indent(level + 1);
                        self.line_comment();
                    }
                    if self.chance(10) {
                        self.indent(level + 1);
                        let multi = self.chance(2);
                        self.block_comment(multi);
                        self.out.push_str(self.nl);
                    }
                    self.indent(level + 1);
                }
                self.item(key, g, level + 1, true);
                self.gap(true, level + 1, 8);
                let last = i + 1 == items.len();
                if !last || trailing {
                    if last {
                        self.trailing.push(self.out.len());
                    }
                    self.out.push(',');
                }
                if self.chance(4) {
                    self.out.push(' ');
                    if self.chance(2) {
                        self.line_comment();
                    } else {
                        self.block_comment(false);
                    }
                }
            }
            if !self.at_line_start() && (items.is_empty() || !self.chance(8)) {
                self.out.push_str(self.nl);
            }
            if self.at_line_start() {
                if self.chance(8) {
                    self.indent(level + 1);
                    self.line_comment();
                }
                self.indent(level);
            }
            self.out.push(close);
        }
    }

    /// Checks that the parsed tree matches the generated value: types, number text, decoded
    /// strings and keys.
    fn check_tree(doc: &Document, node: &Node, g: &Gen) -> Result<(), TestCaseError> {
        let src = doc.source(node);
        match (&node.value, g) {
            (Value::Null, Gen::Null) => prop_assert_eq!(src, "null"),
            (Value::Bool(a), Gen::Bool(b)) => prop_assert_eq!(a, b),
            (Value::Number, Gen::Num(text)) => prop_assert_eq!(src, text),
            (Value::String, Gen::Str(s)) => {
                prop_assert_eq!(doc.str_value(node), Some(s.clone()));
            }
            (Value::Array(nodes), Gen::Arr(items)) => {
                prop_assert!(src.starts_with('[') && src.ends_with(']'));
                prop_assert_eq!(nodes.len(), items.len());
                for (n, g) in nodes.iter().zip(items) {
                    check_tree(doc, n, g)?;
                }
            }
            (Value::Object(members), Gen::Obj(items)) => {
                let braced = src.starts_with('{') && src.ends_with('}');
                prop_assert!(braced);
                prop_assert_eq!(members.len(), items.len());
                for (m, (k, g)) in members.iter().zip(items) {
                    prop_assert_eq!(&m.key, k);
                    prop_assert!(doc.text()[m.key_start..].starts_with('"'));
                    check_tree(doc, &m.value, g)?;
                }
            }
            (v, g) => prop_assert!(false, "node {:?} for {:?}", v, g),
        }
        Ok(())
    }

    fn parsed(text: &str) -> Result<Document, TestCaseError> {
        Document::parse(text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))
    }

    fn standard_json(doc: &Document) -> Result<serde_json::Value, TestCaseError> {
        let plain = doc.standardize();
        prop_assert_eq!(plain.len(), doc.text().len());
        for (a, b) in plain.bytes().zip(doc.text().bytes()) {
            prop_assert_eq!(a == b'\n', b == b'\n');
        }
        serde_json::from_str(&plain).map_err(|e| TestCaseError::fail(format!("{e}\n{plain}")))
    }

    const MEMBERS: &[&str] = &[
        "alice@example.com",
        "bob@example.com",
        "tag:prod",
        "",
        "a\"b\\c",
        "é😀\u{2028}",
        "line\nbreak",
    ];

    fn arb_members() -> impl Strategy<Value = Vec<String>> {
        vec(
            prop_oneof![3 => select(MEMBERS).prop_map(str::to_owned), 1 => arb_string()],
            0..6,
        )
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add,
        RemoveString,
        Set(Gen, u64),
        Remove,
    }

    fn arb_op() -> impl Strategy<Value = (Op, usize, usize)> {
        (
            prop_oneof![
                Just(Op::Add),
                Just(Op::RemoveString),
                (arb_gen(), any::<u64>()).prop_map(|(g, seed)| Op::Set(g, seed)),
                Just(Op::Remove),
            ],
            any::<usize>(),
            any::<usize>(),
        )
    }

    const KEYS: &[&str] = &["members", "a", "group:prod", "", "é\"\\"];

    /// What an operation should do, worked out on the generated value.
    fn expect_op(
        g: &mut Gen,
        op: &Op,
        path: &[P],
        pick: usize,
    ) -> Result<(String, Option<bool>), &'static str> {
        let target = g.get_mut(path).ok_or("not found")?;
        match (op, target) {
            (Op::Add | Op::RemoveString, Gen::Arr(items)) => {
                let value = match items.get(pick % (items.len() + 1)) {
                    Some(Gen::Str(s)) if pick.is_multiple_of(3) => s.clone(),
                    _ => MEMBERS[pick % MEMBERS.len()].to_owned(),
                };
                let wanted = Gen::Str(value.clone());
                let changed = if matches!(op, Op::Add) {
                    let absent = !items.contains(&wanted);
                    if absent {
                        items.push(wanted);
                    }
                    absent
                } else {
                    let before = items.len();
                    items.retain(|item| *item != wanted);
                    items.len() != before
                };
                Ok((value, Some(changed)))
            }
            (Op::Set(..) | Op::Remove, Gen::Obj(members)) => {
                let key = match members.get(pick % (members.len() + 1)) {
                    Some((k, _)) if pick.is_multiple_of(2) => k.clone(),
                    _ => KEYS[pick % KEYS.len()].to_owned(),
                };
                let found = members.iter().position(|(k, _)| *k == key);
                match op {
                    Op::Set(value, _) => {
                        match found {
                            Some(i) => members[i].1 = value.clone(),
                            None => members.push((key.clone(), value.clone())),
                        }
                        Ok((key, None))
                    }
                    _ => {
                        if let Some(i) = found {
                            members.remove(i);
                        }
                        Ok((key, Some(found.is_some())))
                    }
                }
            }
            _ => Err("wrong type"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
            ..ProptestConfig::default()
        })]

        /// (a) and (b): generated HuJSON parses to the generated value, prints back
        /// unchanged, and reports exactly the comments that were written.
        #[test]
        fn parse_print_standardize(g in arb_gen(), seed in any::<u64>()) {
            let p = Printer::print(&g, seed);
            let doc = parsed(&p.out)?;
            prop_assert_eq!(doc.text(), p.out.as_str());
            prop_assert_eq!(doc.comments(), p.comments.as_slice());
            for &(start, end) in doc.comments() {
                let c = &p.out[start..end];
                let line = c.starts_with("//") && c.ends_with('\n') && c.matches('\n').count() == 1;
                let block = c.starts_with("/*") && c.ends_with("*/") && !c[2..c.len() - 2].contains("*/");
                prop_assert!(line || block, "not a comment: {:?}", c);
            }
            let mut expected = p.out.clone().into_bytes();
            for &(start, end) in &p.comments {
                for b in &mut expected[start..end] {
                    if !matches!(*b, b'\n' | b'\r' | b'\t') {
                        *b = b' ';
                    }
                }
            }
            for &comma in &p.trailing {
                expected[comma] = b' ';
            }
            prop_assert_eq!(doc.standardize().into_bytes(), expected);
            prop_assert_eq!(standard_json(&doc)?, g.to_json());
            check_tree(&doc, doc.root(), &g)?;
            prop_assert_eq!(hujson::standardize(&p.out), Ok(doc.standardize()));
        }

        /// (c): edits change the value as the same edit on the generated value does, and no
        /// byte outside the edited container.
        #[test]
        fn edits(
            root in arb_object(),
            members in arb_members(),
            place in any::<usize>(),
            seed in any::<u64>(),
            ops in vec(arb_op(), 1..5),
        ) {
            // Put a string array somewhere in the document.
            let mut g = root;
            let mut containers = Vec::new();
            g.containers(&mut Vec::new(), &mut containers);
            let mut target = containers[place % containers.len()].clone();
            let array = Gen::Arr(members.into_iter().map(Gen::Str).collect());
            match g.get_mut(&target) {
                Some(Gen::Obj(m)) => {
                    let mut key = "members".to_owned();
                    while m.iter().any(|(k, _)| *k == key) {
                        key.push('_');
                    }
                    m.insert(place % (m.len() + 1), (key.clone(), array));
                    target.push(P::K(key));
                }
                Some(Gen::Arr(items)) => {
                    let at = place % (items.len() + 1);
                    items.insert(at, array);
                    target.push(P::I(at));
                }
                _ => unreachable!(),
            }
            let mut paths = vec![target.clone()];
            g.containers(&mut Vec::new(), &mut paths);

            let mut doc = parsed(&Printer::print(&g, seed).out)?;
            for (op, path_pick, pick) in ops {
                let path = match op {
                    Op::Add | Op::RemoveString if path_pick % 4 != 0 => target.clone(),
                    _ => paths[path_pick % paths.len()].clone(),
                };
                let seg = segs(&path);
                let before = doc.text().to_owned();
                let span = doc.get(&seg).map(|n| (n.start, n.end));
                let mut want = g.clone();
                let expected = expect_op(&mut want, &op, &path, pick);
                let got: Result<Option<bool>, EditError> = match (&op, &expected) {
                    (Op::Add, Ok((v, _))) => doc.add_string(&seg, v).map(Some),
                    (Op::Add, Err(_)) => doc.add_string(&seg, "x").map(Some),
                    (Op::RemoveString, Ok((v, _))) => doc.remove_string(&seg, v).map(Some),
                    (Op::RemoveString, Err(_)) => doc.remove_string(&seg, "x").map(Some),
                    (Op::Set(value, vseed), Ok((k, _))) => {
                        let text = Printer::print(value, *vseed).out;
                        doc.set(&seg, k, &text).map(|()| None)
                    }
                    (Op::Set(..), Err(_)) => doc.set(&seg, "k", "1").map(|()| None),
                    (Op::Remove, Ok((k, _))) => doc.remove(&seg, k).map(Some),
                    (Op::Remove, Err(_)) => doc.remove(&seg, "k").map(Some),
                };
                match (expected, got) {
                    (Ok((_, changed)), Ok(got)) => {
                        prop_assert_eq!(got, changed, "{:?} on {:?}", op, path);
                        if got == Some(false) {
                            prop_assert_eq!(doc.text(), before.as_str());
                        }
                        let (start, end) = span.unwrap();
                        let after = doc.text();
                        prop_assert!(after.len() >= start + before.len() - end);
                        prop_assert_eq!(&after[..start], &before[..start], "bytes before changed");
                        prop_assert_eq!(
                            &after[after.len() - (before.len() - end)..],
                            &before[end..],
                            "bytes after changed"
                        );
                        prop_assert_eq!(standard_json(&doc)?, want.to_json(), "{:?} {:?}\n--- before\n{}\n--- after\n{}", op, path, before, after);
                        check_tree(&doc, doc.root(), &want)?;
                        g = want;
                    }
                    (Err("not found"), Err(EditError::NotFound { .. }))
                    | (Err("wrong type"), Err(EditError::WrongType { .. })) => {
                        prop_assert_eq!(doc.text(), before.as_str());
                    }
                    (expected, got) => prop_assert!(
                        false,
                        "{:?} on {:?}: expected {:?}, got {:?}\n{}",
                        op, path, expected, got, before
                    ),
                }
            }
        }

        /// (d): arbitrary text never panics; errors point inside the text.
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            check_arbitrary(&text)?;
        }

        #[test]
        fn jsonish_text_never_panics(
            chars in vec(select(vec![
                '[', ']', '{', '}', '"', ',', ':', '/', '*', '\\', 'u', '0', '1', '-', '.', 'e',
                '+', 't', 'r', 'u', 'e', 'n', 'l', 'f', 'a', 's', ' ', '\n', '\r', '\t', 'é',
                '\u{a0}', 'x',
            ]), 0..64),
        ) {
            check_arbitrary(&chars.into_iter().collect::<String>())?;
        }

        /// `LineIndex` agrees with `line_col` at every offset.
        #[test]
        fn line_index_matches_line_col(
            chars in vec(select(vec!['a', 'é', '\n', '\r', ' ']), 0..40),
        ) {
            let text: String = chars.into_iter().collect();
            let index = hujson::LineIndex::new(&text);
            for offset in (0..=text.len()).filter(|&o| text.is_char_boundary(o)) {
                prop_assert_eq!(index.line_col(offset), hujson::line_col(&text, offset));
            }
        }

        /// Near-valid text: a generated document with a few characters changed.
        #[test]
        fn mutated_documents_never_panic(
            g in arb_gen(),
            seed in any::<u64>(),
            mutations in vec((any::<usize>(), 0u8..3, select(vec![
                ',', '/', '*', '"', '\\', '[', ']', '{', '}', ':', ' ', '\n', '0', 'x',
            ])), 1..4),
        ) {
            let mut chars: Vec<char> = Printer::print(&g, seed).out.chars().collect();
            for (at, kind, c) in mutations {
                let at = at % (chars.len() + 1);
                match kind {
                    0 => chars.insert(at, c),
                    1 if at < chars.len() => { chars.remove(at); }
                    _ if at < chars.len() => chars[at] = c,
                    _ => chars.push(c),
                }
            }
            check_arbitrary(&chars.into_iter().collect::<String>())?;
        }
    }

    /// Parses text; on success standardizes and edits the root, on failure checks the error.
    /// Plain JSON that serde_json accepts must be accepted with the same value.
    fn check_arbitrary(text: &str) -> Result<(), TestCaseError> {
        let serde: Option<serde_json::Value> = serde_json::from_str(text).ok();
        match Document::parse(text) {
            Ok(mut doc) => {
                let plain = doc.standardize();
                match serde_json::from_str::<serde_json::Value>(&plain) {
                    Ok(value) => {
                        if let Some(serde) = serde {
                            prop_assert_eq!(&value, &serde);
                        }
                    }
                    // Like Go's, the parser checks syntax only: it accepts unpaired UTF-16
                    // surrogate escapes (decoded as U+FFFD) and numbers too big for an f64,
                    // which serde_json refuses.
                    Err(e)
                        if ["surrogate", "end of hex escape", "number out of range"]
                            .iter()
                            .any(|m| e.to_string().contains(m)) =>
                    {
                        return Ok(());
                    }
                    Err(e) => prop_assert!(false, "{}\n{}", e, plain),
                }
                standard_json(&doc)?;
                let root = doc.root().clone();
                match root.value {
                    Value::Array(ref items) => {
                        let n = items.len();
                        prop_assert!(doc.add_string(&[], "fuzz").is_ok());
                        prop_assert_eq!(doc.remove_string(&[], "fuzz"), Ok(true));
                        let appended = doc.append(&[], "{\"a\": [1]}");
                        prop_assert!(appended.is_ok());
                        prop_assert!(doc.remove_index(&[], 0).is_ok());
                        prop_assert_eq!(doc.root().as_array().map(<[Node]>::len), Some(n));
                    }
                    Value::Object(_) => {
                        prop_assert!(doc.set(&[], "fuzz", "[]").is_ok());
                        prop_assert_eq!(doc.add_string(&[Seg::Key("fuzz")], "x"), Ok(true));
                        prop_assert!(doc.set(&[], "fuzz", "null").is_ok());
                        prop_assert_eq!(doc.remove(&[], "fuzz"), Ok(true));
                    }
                    _ => {}
                }
                standard_json(&doc)?;
            }
            Err(e) => {
                prop_assert!(serde.is_none(), "serde_json accepts what we refuse: {}", e);
                prop_assert!(e.offset <= text.len());
                prop_assert!(text.is_char_boundary(e.offset));
                prop_assert_eq!((e.line, e.column), hujson::line_col(text, e.offset));
                prop_assert!(!e.reason.is_empty());
            }
        }
        Ok(())
    }
}

#[test]
fn adding_many_members_at_once_matches_adding_them_one_by_one() {
    let layouts = [
        "{\n\t\"groups\": {\n\t\t// managed\n\t\t\"group:prod\": [\n\t\t\t\"a@x.com\",\n\t\t],\n\t},\n}\n",
        "{\"groups\": {\"group:prod\": [\"a@x.com\"]}}",
        "{\"groups\": {\"group:prod\": []}}",
        "{\n  \"groups\": {\n    \"group:prod\": [\n    ]\n  }\n}\n",
    ];
    let path = [Seg::Key("groups"), Seg::Key("group:prod")];
    for text in layouts {
        let mut bulk = Document::parse(text).unwrap();
        let added = bulk
            .add_strings(&path, &["b@x.com", "a@x.com", "c@x.com", "b@x.com"])
            .unwrap();
        assert_eq!(added, 2 + usize::from(!text.contains("a@x.com")), "{text}");
        let mut one = Document::parse(text).unwrap();
        for m in ["b@x.com", "a@x.com", "c@x.com"] {
            one.add_string(&path, m).unwrap();
        }
        assert_eq!(bulk.text(), one.text(), "same bytes for {text:?}");
        assert!(bulk.text().contains("managed") || !text.contains("managed"));
        assert_eq!(bulk.add_strings(&path, &["a@x.com"]).unwrap(), 0);
    }
}

#[test]
fn removing_many_members_at_once_matches_removing_them_one_by_one() {
    let layouts = [
        "{\n\t\"groups\": {\n\t\t\"group:prod\": [\n\t\t\t// first\n\t\t\t\"a@x.com\",\n\t\t\t\"b@x.com\",\n\t\t\t\"c@x.com\",\n\t\t\t\"d@x.com\"\n\t\t],\n\t},\n}\n",
        "{\n\t\"groups\": {\n\t\t\"group:prod\": [\n\t\t\t\"a@x.com\",\n\t\t\t\"b@x.com\",\n\t\t\t\"c@x.com\",\n\t\t\t\"d@x.com\",\n\t\t],\n\t},\n}\n",
        "{\"groups\": {\"group:prod\": [\"a@x.com\", \"b@x.com\", \"c@x.com\", \"d@x.com\"]}}",
        "{\r\n  \"groups\": {\r\n    \"group:prod\": [\r\n      \"a@x.com\", // lead\r\n      \"b@x.com\",\r\n      \"c@x.com\",\r\n      \"d@x.com\"\r\n    ]\r\n  }\r\n}\r\n",
    ];
    let path = [Seg::Key("groups"), Seg::Key("group:prod")];
    for sets in [
        &["b@x.com", "d@x.com"][..],
        &["a@x.com", "c@x.com"],
        &["a@x.com", "b@x.com", "c@x.com", "d@x.com"],
        &["zz@x.com"],
    ] {
        for text in layouts {
            let mut bulk = Document::parse(text).unwrap();
            let removed = bulk.remove_strings(&path, sets).unwrap();
            let mut one = Document::parse(text).unwrap();
            let mut expected = 0;
            for m in sets {
                expected += usize::from(one.remove_string(&path, m).unwrap());
            }
            assert_eq!(removed, expected, "{sets:?} in {text:?}");
            let as_json = |d: &Document| -> serde_json::Value {
                serde_json::from_str(&d.standardize()).unwrap()
            };
            assert_eq!(as_json(&bulk), as_json(&one), "{sets:?} in {text:?}");
            assert_eq!(
                bulk.text(),
                one.text(),
                "same bytes for {sets:?} in {text:?}"
            );
        }
    }
}

#[test]
fn strings_reads_a_string_array() {
    let doc =
        Document::parse("{\"g\": [\"a\", /* c */ \"b\\u0041\"], \"mixed\": [\"a\", 1], \"o\": {}}")
            .unwrap();
    assert_eq!(
        doc.strings(&[Seg::Key("g")]),
        Some(vec!["a".to_owned(), "bA".to_owned()])
    );
    assert_eq!(doc.strings(&[Seg::Key("mixed")]), None);
    assert_eq!(doc.strings(&[Seg::Key("o")]), None);
    assert_eq!(doc.strings(&[Seg::Key("missing")]), None);
}
