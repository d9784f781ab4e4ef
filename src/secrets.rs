//! Secrets: `${ENV_VAR}` references in the config, values read from the environment, and a
//! redactor that every outbound text (chat, logs of failures, step details) passes through.
//!
//! *Invariant*: a secret's value is only ever held in a [`Secret`], whose `Debug` and `Display`
//! print a mask, and every resolved value is registered with the redactor.

use std::fmt;
use std::sync::RwLock;

use serde::{Deserialize, Deserializer};

const MASK: &str = "•••";

static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// A `${NAME}` reference as written in the config.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRef {
    var: String,
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<SecretRef, String> {
        let var = s
            .strip_prefix("${")
            .and_then(|r| r.strip_suffix('}'))
            .filter(|v| valid_var(v))
            .ok_or_else(|| "secrets are never inline: write a reference like \"${SLACK_BOT_TOKEN}\" and set that variable in the environment".to_string())?;
        Ok(SecretRef { var: var.to_string() })
    }

    pub fn var(&self) -> &str {
        &self.var
    }

    /// Reads the value from the process environment.
    pub fn resolve(&self) -> Result<Secret, String> {
        self.resolve_in(&Vars::process())
    }

    /// Reads the value from `vars`.
    pub fn resolve_in(&self, vars: &Vars) -> Result<Secret, String> {
        match vars.get(&self.var) {
            Some(v) if !v.is_empty() => Ok(Secret::register(v)),
            _ => Err(format!("environment variable {} is not set", self.var)),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${{{}}}", self.var)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where `${VAR}` references are read: the process environment, or a table given explicitly (a
/// test, or a program embedding the bot), which is then the only source.
#[derive(Clone, Default)]
pub struct Vars(Option<std::sync::Arc<std::collections::BTreeMap<String, String>>>);

impl Vars {
    pub fn process() -> Vars {
        Vars(None)
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Vars {
        Vars(Some(std::sync::Arc::new(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())))
    }

    pub fn get(&self, name: &str) -> Option<String> {
        match &self.0 {
            None => std::env::var(name).ok(),
            Some(table) => table.get(name).cloned(),
        }
    }

    /// AWS keys given in an explicit table (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional
    /// `AWS_SESSION_TOKEN`), which then stand in for the SDK's own reading of the environment;
    /// `None` for the process environment, where the SDK's standard chain applies.
    /// The key id is an identifier, not a secret, and is not redacted.
    pub fn explicit_aws_keys(&self) -> Option<(String, Secret, Option<Secret>)> {
        let table = self.0.as_ref()?;
        let get = |name: &str| table.get(name).filter(|v| !v.is_empty()).cloned();
        Some((get("AWS_ACCESS_KEY_ID")?, Secret::register(get("AWS_SECRET_ACCESS_KEY")?), get("AWS_SESSION_TOKEN").map(Secret::register)))
    }
}

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Vars(process environment)"),
            Some(table) => write!(f, "Vars({:?})", table.keys().collect::<Vec<_>>()),
        }
    }
}

/// Compares a presented credential with the expected one in time that does not depend on where
/// they differ, so that a caller cannot find the token byte by byte.
pub fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, b) in presented.iter().enumerate() {
        diff |= b ^ expected[i % expected.len()];
    }
    std::hint::black_box(diff) == 0
}

fn valid_var(v: &str) -> bool {
    let mut chars = v.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// A secret value. It prints as a mask.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    fn register(value: String) -> Secret {
        if value.len() >= 4 {
            // A panic elsewhere must not switch redaction off: a poisoned list is still the list.
            let mut known = KNOWN.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut changed = false;
            for form in encoded_forms(&value) {
                if !known.contains(&form) {
                    known.push(form);
                    changed = true;
                }
            }
            if changed {
                // Longest first, so that a secret containing another is masked whole.
                known.sort_by_key(|v| std::cmp::Reverse(v.len()));
            }
        }
        Secret(value)
    }

    /// Wraps a value that did not come from a reference (e.g. a captured token) so it is redacted too.
    pub fn from_value(value: String) -> Secret {
        Secret::register(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// A secret as it may appear in text: as itself, escaped inside a JSON string (with or without
/// `\/`), and percent-encoded the ways URLs and form bodies encode it.
fn encoded_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_string()];
    let json = serde_json::to_string(value).unwrap_or_default();
    if let Some(inner) = json.strip_prefix('"').and_then(|j| j.strip_suffix('"')) {
        forms.push(inner.to_string());
        forms.push(inner.replace('/', "\\/"));
    }
    forms.push(url::form_urlencoded::byte_serialize(value.as_bytes()).collect());
    // RFC 3986 keeps the unreserved `-._~`; stricter encoders escape everything but letters and digits.
    let every_byte = |keep_unreserved: bool, upper: bool| {
        value
            .bytes()
            .map(|b| match b {
                _ if b.is_ascii_alphanumeric() => (b as char).to_string(),
                b'-' | b'.' | b'_' | b'~' if keep_unreserved => (b as char).to_string(),
                _ if upper => format!("%{b:02X}"),
                _ => format!("%{b:02x}"),
            })
            .collect::<String>()
    };
    for (keep_unreserved, upper) in [(true, true), (true, false), (false, true), (false, false)] {
        forms.push(every_byte(keep_unreserved, upper));
    }
    if let Ok(mut u) = url::Url::parse("http://h/") {
        if u.set_password(Some(value)).is_ok() {
            if let Some(p) = u.password() {
                forms.push(p.to_string());
            }
        }
        if let Ok(mut segments) = u.path_segments_mut() {
            segments.clear().push(value);
        }
        forms.push(u.path().trim_start_matches('/').to_string());
    }
    forms.sort();
    forms.dedup();
    forms
}

/// A URL as it may be shown (chat, logs, traces, errors): without its user and password, and with
/// any known secret (a token in the query) masked.
pub fn display_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.has_host() && (!u.username().is_empty() || u.password().is_some()) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let shown = u.as_str();
            // The parser adds the root path ("http://h" → "http://h/"); show what was written.
            let shown = if u.path() == "/" && !raw.ends_with('/') { shown.strip_suffix('/').unwrap_or(shown) } else { shown };
            redact(shown)
        }
        Ok(_) => redact(raw),
        // Not a URL the parser accepts (a template, a `${VAR}`): drop whatever sits between the scheme and an `@`.
        Err(_) => match raw.split_once("://") {
            Some((scheme, rest)) => {
                let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let (authority, tail) = rest.split_at(authority_end);
                let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
                redact(&format!("{scheme}://{host}{tail}"))
            }
            None => redact(raw),
        },
    }
}

/// Expands every `${NAME}` in `s` from the environment; the values become known secrets.
pub fn expand_env(s: &str) -> Result<String, String> {
    expand_env_in(s, &Vars::process())
}

/// [`expand_env`] reading from `vars`.
pub fn expand_env_in(s: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unterminated ${{…}} reference in \"{}\"", redact(s)))?;
        let var = &after[..end];
        if !valid_var(var) {
            return Err(format!("\"${{{var}}}\" is not an environment variable reference (NAME in capitals)"));
        }
        let secret = SecretRef { var: var.to_string() }.resolve_in(vars)?;
        out.push_str(secret.expose());
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands an `env = { NAME = "…${VAR}…" }` table for a child process; the error names the key
/// (`env.FLYWAY_URL: environment variable PROD_FLYWAY_URL is not set`).
pub fn expand_env_table(table: &std::collections::BTreeMap<String, String>, vars: &Vars) -> Result<Vec<(String, String)>, String> {
    table.iter().map(|(name, value)| expand_env_in(value, vars).map(|v| (name.clone(), v)).map_err(|e| format!("env.{name}: {e}"))).collect()
}

/// The names of the variables `s` refers to.
pub fn referenced_vars(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                out.push(after[..end].to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

/// Replaces every known secret value in `text` with a mask.
pub fn redact(text: &str) -> String {
    let known = KNOWN.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut out = text.to_string();
    for value in known.iter() {
        if out.contains(value.as_str()) {
            out = out.replace(value.as_str(), MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inline_secret_is_refused() {
        assert!(SecretRef::parse("xoxb-123").unwrap_err().contains("never inline"));
        assert!(SecretRef::parse("${lower}").is_err());
        assert_eq!(SecretRef::parse("${SLACK_BOT_TOKEN}").unwrap().var(), "SLACK_BOT_TOKEN");
    }

    #[test]
    fn a_resolved_secret_never_prints_and_is_redacted_from_text() {
        let vars = Vars::from_pairs([("DEPLOYBOT_TEST_SECRET_A", "hunter2-very-secret")]);
        let s = SecretRef::parse("${DEPLOYBOT_TEST_SECRET_A}").unwrap().resolve_in(&vars).unwrap();
        assert_eq!(format!("{s} {s:?}"), "••• •••");
        assert_eq!(redact("token=hunter2-very-secret!"), "token=•••!");
    }

    #[test]
    fn expansion_reads_each_reference_and_names_a_missing_one() {
        let vars = Vars::from_pairs([("DEPLOYBOT_TEST_SECRET_B", "pw-b-123")]);
        assert_eq!(expand_env_in("postgres://u:${DEPLOYBOT_TEST_SECRET_B}@h/db", &vars).unwrap(), "postgres://u:pw-b-123@h/db");
        let err = expand_env("x${DEPLOYBOT_TEST_SURELY_UNSET}").unwrap_err();
        assert!(err.contains("DEPLOYBOT_TEST_SURELY_UNSET is not set"), "{err}");
        assert_eq!(referenced_vars("a ${X} b ${Y_2}"), vec!["X", "Y_2"]);
    }

    #[test]
    fn a_secret_is_redacted_in_its_json_escaped_and_url_encoded_forms() {
        let secret = Secret::from_value(r#"p@ss/w"rd\ 7+é-x"#.to_string());
        let value = secret.expose();
        let json = serde_json::json!({ "password": value }).to_string();
        assert!(!json.contains(value), "the JSON form differs from the value: {json}");
        assert_eq!(redact(&json), r#"{"password":"•••"}"#);
        let slash_escaped = json.replace('/', "\\/");
        assert_eq!(redact(&slash_escaped), r#"{"password":"•••"}"#);
        let form: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("password", value).finish();
        assert_eq!(redact(&form), "password=•••");
        let mut u = url::Url::parse("https://db.internal/x").unwrap();
        u.set_username("app").unwrap();
        u.set_password(Some(value)).unwrap();
        assert_eq!(redact(u.as_str()), "https://app:•••@db.internal/x");
        u.set_password(None).unwrap();
        u.path_segments_mut().unwrap().push(value);
        assert_eq!(redact(u.as_str()), "https://app@db.internal/x/•••");
        let every_byte: String = value.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
        assert_eq!(redact(&format!("q={every_byte}")), "q=•••");
    }

    #[test]
    fn a_credential_is_the_same_only_when_every_byte_and_the_length_match() {
        assert!(same_secret(b"tok-123", b"tok-123"));
        for presented in [&b"tok-124"[..], b"tok-12", b"tok-1234", b"", b"TOK-123"] {
            assert!(!same_secret(presented, b"tok-123"), "{presented:?}");
        }
        assert!(!same_secret(b"", b""), "an empty expected token matches nothing");
    }

    #[test]
    fn explicit_vars_are_the_only_source_of_their_references() {
        let vars = Vars::from_pairs([("DEPLOYBOT_TEST_EXPLICIT_A", "explicit-value-1")]);
        assert_eq!(SecretRef::parse("${DEPLOYBOT_TEST_EXPLICIT_A}").unwrap().resolve_in(&vars).unwrap().expose(), "explicit-value-1");
        assert_eq!(expand_env_in("x=${DEPLOYBOT_TEST_EXPLICIT_A}", &vars).unwrap(), "x=explicit-value-1");
        let err = SecretRef::parse("${PATH}").unwrap().resolve_in(&vars).unwrap_err();
        assert_eq!(err, "environment variable PATH is not set", "the process environment is not consulted");
        assert_eq!(redact("explicit-value-1"), "•••");
    }

    #[test]
    fn urls_are_shown_without_their_user_and_password() {
        let check = |raw: &str, shown: &str| assert_eq!(display_url(raw), shown, "{raw}");
        check("https://admin:hunter2@prom.internal:9090/api", "https://prom.internal:9090/api");
        check("https://token@prom.internal/", "https://prom.internal/");
        check("https://token@prom.internal", "https://prom.internal");
        check("http://127.0.0.1:9090", "http://127.0.0.1:9090");
        check("https://u:${PROM_PASSWORD}@prom.internal/", "https://prom.internal/");
        check("https://u:p@exa mple/{x}", "https://exa mple/{x}");
        check("postgres://deploybot:pw@db:5432/deploybot", "postgres://db:5432/deploybot");
        check("not a url", "not a url");
    }
}
