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

    /// Reads the value from the environment.
    pub fn resolve(&self) -> Result<Secret, String> {
        match std::env::var(&self.var) {
            Ok(v) if !v.is_empty() => Ok(Secret::register(v)),
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
            if !known.contains(&value) {
                known.push(value.clone());
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

/// Expands every `${NAME}` in `s` from the environment; the values become known secrets.
pub fn expand_env(s: &str) -> Result<String, String> {
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
        let secret = SecretRef { var: var.to_string() }.resolve()?;
        out.push_str(secret.expose());
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
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
        std::env::set_var("DEPLOYBOT_TEST_SECRET_A", "hunter2-very-secret");
        let s = SecretRef::parse("${DEPLOYBOT_TEST_SECRET_A}").unwrap().resolve().unwrap();
        assert_eq!(format!("{s} {s:?}"), "••• •••");
        assert_eq!(redact("token=hunter2-very-secret!"), "token=•••!");
    }

    #[test]
    fn expansion_reads_each_reference_and_names_a_missing_one() {
        std::env::set_var("DEPLOYBOT_TEST_SECRET_B", "pw-b-123");
        assert_eq!(expand_env("postgres://u:${DEPLOYBOT_TEST_SECRET_B}@h/db").unwrap(), "postgres://u:pw-b-123@h/db");
        let err = expand_env("x${DEPLOYBOT_TEST_SURELY_UNSET}").unwrap_err();
        assert!(err.contains("DEPLOYBOT_TEST_SURELY_UNSET is not set"), "{err}");
        assert_eq!(referenced_vars("a ${X} b ${Y_2}"), vec!["X", "Y_2"]);
    }
}
