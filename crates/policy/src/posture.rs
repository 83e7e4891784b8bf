//! Device posture conditions (`postures`, `srcPosture`, `defaultSrcPosture`): each posture is a
//! list of `attribute operator value` conditions that must all hold for a device.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::Value as Json;

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    List(Vec<Literal>),
}

/// One condition, e.g. `custom:tidegate_db == 'granted'` or `node:os IN ['macos', 'linux']`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub attribute: String,
    pub op: Op,
    pub value: Literal,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, String> {
        let text = text.trim();
        let bad = |why: &str| format!("posture condition {text:?}: {why}");
        let (attribute, rest) = text
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("expected `attribute operator value`"))?;
        if !attribute.contains(':') {
            return Err(bad(
                "the attribute needs a namespace such as node: or custom:",
            ));
        }
        let rest = rest.trim_start();
        const OPS: [(&str, Op); 8] = [
            ("NOT IN", Op::NotIn),
            ("IN", Op::In),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let (op, value) = OPS
            .into_iter()
            .find_map(|(token, op)| rest.strip_prefix(token).map(|v| (op, v)))
            .ok_or_else(|| bad("unknown operator"))?;
        let value = parse_literal(value.trim()).map_err(|e| bad(&e))?;
        if matches!(op, Op::In | Op::NotIn) != matches!(value, Literal::List(_)) {
            return Err(bad(
                "IN and NOT IN take a list, other operators a single value",
            ));
        }
        Ok(Condition {
            attribute: attribute.to_owned(),
            op,
            value,
        })
    }

    /// Does a device with these attributes satisfy the condition? A missing attribute never
    /// does, so a removed or expired attribute closes access.
    pub fn holds(&self, attributes: &BTreeMap<String, Json>) -> bool {
        let Some(actual) = attributes.get(&self.attribute) else {
            return false;
        };
        let actual = match actual {
            Json::String(s) => Literal::Str(s.clone()),
            Json::Number(n) => Literal::Num(n.as_f64().unwrap_or(f64::NAN)),
            Json::Bool(b) => Literal::Bool(*b),
            _ => return false,
        };
        let version = self.attribute == "node:tsVersion";
        let cmp = |want: &Literal| compare(&actual, want, version);
        match (&self.op, &self.value) {
            (Op::In, Literal::List(items)) => items.iter().any(|i| cmp(i) == Some(Ordering::Equal)),
            (Op::NotIn, Literal::List(items)) => {
                items.iter().all(|i| cmp(i) != Some(Ordering::Equal))
            }
            (op, want) => match (op, cmp(want)) {
                (Op::Eq, Some(o)) => o == Ordering::Equal,
                (Op::Ne, o) => o != Some(Ordering::Equal),
                (Op::Lt, Some(o)) => o == Ordering::Less,
                (Op::Le, Some(o)) => o != Ordering::Greater,
                (Op::Gt, Some(o)) => o == Ordering::Greater,
                (Op::Ge, Some(o)) => o != Ordering::Less,
                _ => false,
            },
        }
    }
}

fn compare(actual: &Literal, want: &Literal, version: bool) -> Option<Ordering> {
    match (actual, want) {
        (Literal::Str(a), Literal::Str(b)) if version => Some(compare_versions(a, b)),
        (Literal::Str(a), Literal::Str(b)) => Some(a.cmp(b)),
        (Literal::Num(a), Literal::Num(b)) => a.partial_cmp(b),
        (Literal::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        // Attributes set through the API arrive as strings; compare by meaning.
        (Literal::Str(a), Literal::Bool(b)) => a.parse::<bool>().ok().map(|a| a.cmp(b)),
        (Literal::Str(a), Literal::Num(b)) => a.parse::<f64>().ok()?.partial_cmp(b),
        _ => None,
    }
}

/// Compares dotted versions numerically: `1.58.2` < `1.60`.
fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |v: &str| -> Vec<u64> {
        v.trim_start_matches('v')
            .split(['.', '-'])
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    let (a, b) = (parts(a), parts(b));
    for i in 0..a.len().max(b.len()) {
        let o = a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0));
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn parse_literal(text: &str) -> Result<Literal, String> {
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let items = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_literal)
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Literal::List(items));
    }
    for quote in ['\'', '"'] {
        if let Some(inner) = text.strip_prefix(quote).and_then(|t| t.strip_suffix(quote)) {
            return Ok(Literal::Str(inner.to_owned()));
        }
    }
    match text {
        "true" => Ok(Literal::Bool(true)),
        "false" => Ok(Literal::Bool(false)),
        _ => text
            .parse::<f64>()
            .map(Literal::Num)
            .map_err(|_| format!("{text:?} is not a quoted string, number, boolean or list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, Json)]) -> BTreeMap<String, Json> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn conditions_evaluate_against_attributes() {
        let granted = Condition::parse("custom:db == 'granted'").unwrap();
        assert!(granted.holds(&attrs(&[("custom:db", Json::from("granted"))])));
        assert!(!granted.holds(&attrs(&[("custom:db", Json::from("revoked"))])));
        assert!(
            !granted.holds(&attrs(&[])),
            "missing attribute must fail closed"
        );

        let os = Condition::parse("node:os IN ['macos', 'linux']").unwrap();
        assert!(os.holds(&attrs(&[("node:os", Json::from("linux"))])));
        assert!(!os.holds(&attrs(&[("node:os", Json::from("windows"))])));

        let version = Condition::parse("node:tsVersion >= '1.60'").unwrap();
        assert!(version.holds(&attrs(&[("node:tsVersion", Json::from("1.62.1"))])));
        assert!(!version.holds(&attrs(&[("node:tsVersion", Json::from("1.58.2"))])));

        let flag = Condition::parse("custom:prodAccess == true").unwrap();
        assert!(flag.holds(&attrs(&[("custom:prodAccess", Json::from(true))])));
        assert!(flag.holds(&attrs(&[("custom:prodAccess", Json::from("true"))])));
    }

    #[test]
    fn malformed_conditions_are_refused() {
        assert!(Condition::parse("custom:x").is_err());
        assert!(Condition::parse("custom:x ~= 'a'").is_err());
        assert!(Condition::parse("custom:x IN 'a'").is_err());
        assert!(Condition::parse("nonamespace == 'a'").is_err());
        assert!(Condition::parse("custom:x == unquoted").is_err());
    }
}
