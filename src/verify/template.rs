//! Templates: `{name}` placeholders and `${ENV}` references in strings and JSON values.

use super::*;

// ---------------------------------------------------------------------------------------------------------
// Templates and JSON paths

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Part {
    Text(String),
    Var(String),
    Env(String),
}

/// A string with `{name}` and `${ENV}` placeholders.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Template(pub(super) Vec<Part>);

pub(super) fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn is_env_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Why a template could not be rendered at run time.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Missing {
    Env(String),
    Capture(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Env(name) => write!(f, "environment variable {name} is not set"),
            Missing::Capture(name) => write!(f, "{{{name}}} was not captured"),
        }
    }
}

impl Template {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(ch) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("${") {
                let Some(end) = after.find('}') else {
                    return Err(format!("`${{` without a closing `}}` in {text:?}"));
                };
                let name = &after[..end];
                if !is_env_name(name) {
                    return Err(format!(
                        "`${{{name}}}` is not an environment variable reference (NAME in capitals, digits and _)"
                    ));
                }
                parts.push(Part::Text(std::mem::take(&mut literal)));
                parts.push(Part::Env(name.to_owned()));
                rest = &after[end + 1..];
                continue;
            }
            if let Some(after) = rest.strip_prefix('{') {
                if let Some(end) = after.find('}') {
                    let name = &after[..end];
                    if is_identifier(name) {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                        parts.push(Part::Var(name.to_owned()));
                        rest = &after[end + 1..];
                        continue;
                    }
                }
            }
            literal.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
        parts.push(Part::Text(literal));
        parts.retain(|part| !matches!(part, Part::Text(text) if text.is_empty()));
        Ok(Template(parts))
    }

    pub(super) fn vars(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|part| match part {
            Part::Var(name) => Some(name.as_str()),
            _ => None,
        })
    }

    pub(super) fn envs(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|part| match part {
            Part::Env(name) => Some(name.as_str()),
            _ => None,
        })
    }

    pub(super) fn render(&self, scope: &Scope<'_>) -> Result<String, Missing> {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(name) => match scope
                    .vars
                    .get(name)
                    .or_else(|| scope.captured.get(name).map(String::as_str))
                {
                    Some(value) => out.push_str(value),
                    None => return Err(Missing::Capture(name.clone())),
                },
                Part::Env(name) => match scope.env.get(name).and_then(Option::as_deref) {
                    Some(value) => out.push_str(value),
                    None => return Err(Missing::Env(name.clone())),
                },
            }
        }
        Ok(out)
    }

    /// For names and logs: built-ins substituted, captures and environment references left as written.
    pub(super) fn display(&self, vars: Option<&Vars>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(name) => match vars.and_then(|vars| vars.get(name)) {
                    Some(value) => out.push_str(value),
                    None => out.push_str(&format!("{{{name}}}")),
                },
                Part::Env(name) => out.push_str(&format!("${{{name}}}")),
            }
        }
        out
    }

    /// With every placeholder replaced by a harmless dummy, for validation without a run.
    pub(super) fn dummy(&self) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(_) | Part::Env(_) => out.push_str("placeholder"),
            }
        }
        out
    }
}

/// A JSON value whose string leaves are templates.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum JsonTemplate {
    Text(Template),
    Literal(Value),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    /// Compiles `value`; a string that fails to parse is reported with its path under `at`.
    pub(super) fn compile(value: &Value, at: &str, errors: &mut Vec<(String, String)>) -> Self {
        match value {
            Value::String(text) => match Template::parse(text) {
                Ok(template) => JsonTemplate::Text(template),
                Err(message) => {
                    errors.push((at.to_owned(), message));
                    JsonTemplate::Literal(value.clone())
                }
            },
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Self::compile(item, &format!("{at}[{i}]"), errors))
                    .collect(),
            ),
            Value::Object(fields) => JsonTemplate::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Self::compile(v, &format!("{at}.{k}"), errors)))
                    .collect(),
            ),
            other => JsonTemplate::Literal(other.clone()),
        }
    }

    pub(super) fn templates(&self) -> Vec<&Template> {
        match self {
            JsonTemplate::Text(template) => vec![template],
            JsonTemplate::Literal(_) => Vec::new(),
            JsonTemplate::Array(items) => items.iter().flat_map(Self::templates).collect(),
            JsonTemplate::Object(fields) => {
                fields.iter().flat_map(|(_, v)| v.templates()).collect()
            }
        }
    }

    pub(super) fn render(&self, scope: &Scope<'_>) -> Result<Value, Missing> {
        Ok(match self {
            JsonTemplate::Text(template) => Value::String(template.render(scope)?),
            JsonTemplate::Literal(value) => value.clone(),
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.render(scope))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(scope)?)))
                    .collect::<Result<_, Missing>>()?,
            ),
        })
    }
}
