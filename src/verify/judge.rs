//! Judging a response against a check's expectations, and quoting bodies safely.

use super::*;

/// Keys whose string values are masked when a JSON body is quoted, known secrets or not.
pub(super) const SENSITIVE_KEYS: [&str; 7] = [
    "token",
    "password",
    "passwd",
    "secret",
    "apikey",
    "credential",
    "authorization",
];

pub(super) fn is_sensitive(key: &str) -> bool {
    let key: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    SENSITIVE_KEYS.iter().any(|word| key.contains(word)) && !key.ends_with("type")
}

pub(super) fn mask_sensitive(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                if field.is_string() && is_sensitive(key) {
                    *field = Value::String(REDACTED.to_owned());
                } else {
                    mask_sensitive(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_sensitive),
        _ => {}
    }
}

/// A response body for a message: JSON with token-, password- and secret-like fields masked (a failing
/// login's fresh token is no known secret), then cut to one line.
pub(super) fn quote_body(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(mut json) => {
            mask_sensitive(&mut json);
            snippet(&json.to_string())
        }
        Err(_) => snippet(body),
    }
}

/// The body in one line, at most [`SNIPPET_CHARS`] characters.
pub(super) fn snippet(body: &str) -> String {
    let flat = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return "(empty)".to_owned();
    }
    match flat.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// A JSON value for a message, shortened.
pub(super) fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

pub(super) fn is_json_type(content_type: &str) -> bool {
    content_type == "application/json" || content_type.ends_with("+json")
}

pub(super) fn judge(
    check: &Check,
    expected: &Expected,
    status: u16,
    content_type: Option<&str>,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Attempt {
    let text = String::from_utf8_lossy(body);
    if status != check.expect_status {
        return Attempt::failed(
            Some(status),
            format!(
                "expected status {}, got {status} — body: {}",
                check.expect_status,
                quote_body(&text)
            ),
        );
    }
    let fail = |detail: String| Attempt::failed(Some(status), detail);
    if let Some(problem) = header_mismatch(&check.expect_headers, headers) {
        return fail(problem);
    }
    if let Some(needle) = &expected.body {
        if !text.contains(needle.as_str()) {
            return fail(format!(
                "response body did not contain {needle:?} — body: {}",
                quote_body(&text)
            ));
        }
    }
    let mut captured = Vec::new();
    if check.needs_json() {
        let json: Value = match serde_json::from_slice(body) {
            Ok(json) => json,
            Err(error) => {
                return fail(match content_type {
                    Some(kind) if !is_json_type(kind) => {
                        format!("expected JSON but got {kind} — body: {}", quote_body(&text))
                    }
                    None => format!(
                        "expected JSON but got a response without Content-Type — body: {}",
                        quote_body(&text)
                    ),
                    Some(_) => format!(
                        "response is not valid JSON ({error}) — body: {}",
                        quote_body(&text)
                    ),
                });
            }
        };
        for (path, wanted) in &expected.json {
            if let Some(mismatch) = first_mismatch(&path.text, wanted, path.lookup(&json)) {
                return fail(format!("{mismatch} — body: {}", quote_body(&text)));
            }
        }
        if let Some(Contains { at, fields }) = &expected.contains {
            let (where_, found) = match at {
                Some(path) => (format!("`{}`", path.text), path.lookup(&json)),
                None => ("the response".to_owned(), Some(&json)),
            };
            let Some(Value::Array(items)) = found else {
                let got =
                    found.map_or_else(|| "nothing".to_owned(), |value| kind_of(value).to_owned());
                return fail(format!(
                    "expected a JSON array at {where_}, got {got} — body: {}",
                    quote_body(&text)
                ));
            };
            let matches = |item: &Value| {
                fields.iter().all(|(path, wanted)| {
                    first_mismatch(&path.text, wanted, path.lookup(item)).is_none()
                })
            };
            if !items.iter().any(matches) {
                let wanted: Vec<String> = fields
                    .iter()
                    .map(|(path, value)| format!("{} = {}", path.text, short(value)))
                    .collect();
                return fail(format!(
                    "array at {where_} ({} element{}) did not contain an element with {}",
                    items.len(),
                    if items.len() == 1 { "" } else { "s" },
                    wanted.join(" and ")
                ));
            }
        }
        for (name, path) in &check.captures {
            match path.lookup(&json) {
                None | Some(Value::Null) => {
                    return fail(format!(
                        "could not capture {{{name}}}: JSON field `{}` is missing — body: {}",
                        path.text,
                        quote_body(&text)
                    ));
                }
                Some(Value::String(value)) => captured.push((name.clone(), value.clone())),
                Some(other) => captured.push((name.clone(), other.to_string())),
            }
        }
    }
    let mut detail = format!("status {status}");
    if !captured.is_empty() {
        let names: Vec<&str> = captured.iter().map(|(name, _)| name.as_str()).collect();
        detail.push_str(&format!(", captured {}", names.join(", ")));
    }
    Attempt {
        ok: true,
        status: Some(status),
        detail,
        captured,
    }
}

pub(super) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Scalars compare equal when they are the same JSON, or when one is a string that reads as the other
/// (templates always render strings, while ids may come back as numbers).
pub(super) fn scalars_equal(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        (Value::String(text), other @ (Value::Number(_) | Value::Bool(_)))
        | (other @ (Value::Number(_) | Value::Bool(_)), Value::String(text)) => {
            let rendered = other.to_string();
            rendered == *text
        }
        _ => expected == actual,
    }
}

/// Why `actual` (found at `path`) does not match `expected` as a subset, or `None` when it does.
pub(super) fn first_mismatch(path: &str, expected: &Value, actual: Option<&Value>) -> Option<String> {
    let Some(actual) = actual else {
        return Some(format!("JSON field `{path}` is missing"));
    };
    match expected {
        Value::Object(fields) => {
            let Value::Object(_) = actual else {
                return Some(format!(
                    "JSON field `{path}` was {}, expected an object",
                    short(actual)
                ));
            };
            fields.iter().find_map(|(key, wanted)| {
                first_mismatch(&format!("{path}.{key}"), wanted, actual.get(key))
            })
        }
        Value::Array(items) => {
            let Value::Array(found) = actual else {
                return Some(format!(
                    "JSON field `{path}` was {}, expected an array",
                    short(actual)
                ));
            };
            if found.len() != items.len() {
                return Some(format!(
                    "JSON field `{path}` has {} elements, expected {}",
                    found.len(),
                    items.len()
                ));
            }
            items.iter().enumerate().find_map(|(i, wanted)| {
                first_mismatch(&format!("{path}[{i}]"), wanted, found.get(i))
            })
        }
        scalar if scalars_equal(scalar, actual) => None,
        scalar => Some(format!(
            "JSON field `{path}` was {}, expected {}",
            short(actual),
            short(scalar)
        )),
    }
}

/// Why the response's headers do not meet `expected` (name, text its value must contain), or `None`.
pub(super) fn header_mismatch(expected: &[(HeaderName, String)], headers: &reqwest::header::HeaderMap) -> Option<String> {
    let mut missing = Vec::new();
    for (name, wanted) in expected {
        let values: Vec<String> = headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        if values.is_empty() {
            missing.push(format!("{name}"));
            continue;
        }
        if !wanted.is_empty() && !values.iter().any(|v| v.to_ascii_lowercase().contains(&wanted.to_ascii_lowercase())) {
            return Some(format!("response header {name} was {:?}, expected it to contain {wanted:?}", values.join(", ")));
        }
    }
    (!missing.is_empty()).then(|| format!("response header{} missing: {}", if missing.len() == 1 { "" } else { "s" }, missing.join(", ")))
}
