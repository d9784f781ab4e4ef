use std::collections::BTreeMap;

use serde::Deserialize;

use crate::targets::check_duration;

/// Placeholders a command template may use.
pub const PLACEHOLDERS: [&str; 6] = ["service", "version", "previous", "env", "image", "digest"];

/// The placeholders the `current` template may use: it runs outside any deployment.
pub const CURRENT_PLACEHOLDERS: [&str; 2] = ["service", "image"];

/// The placeholders the `logs` template may use: `{since}` is seconds (`600`), `{tail}` a line count.
pub const LOGS_PLACEHOLDERS: [&str; 4] = ["service", "image", "since", "tail"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// argv run once per service to deploy it, e.g. `["./scripts/deploy.sh", "{service}", "{version}"]`.
    pub deploy: Vec<String>,
    /// argv run to put a service back on `{previous}`; the deploy template with `{version}` = previous when absent.
    #[serde(default)]
    pub rollback: Option<Vec<String>>,
    /// argv that prints the running version of `{service}` on stdout; the store's record is used when absent.
    #[serde(default)]
    pub current: Option<Vec<String>>,
    /// argv that prints `{service}`'s recent log lines on stdout (`{since}` seconds back, at most
    /// `{tail}` lines), for `/logs` and the log watch.
    #[serde(default)]
    pub logs: Option<Vec<String>>,
    #[serde(default = "default_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub workdir: Option<String>,
    /// Extra environment for the commands; values may hold `${VAR}` references.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_timeout() -> String {
    "10m".into()
}

/// A template field: its name, its argv (when set), and the placeholders it may use.
type Template<'a> = (&'a str, Option<&'a Vec<String>>, &'a [&'a str]);

impl CommandConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        check_duration("timeout", &self.timeout, &mut out);
        if crate::config::parse_duration(&self.timeout).is_ok_and(|d| d.is_zero()) {
            out.push(("timeout".into(), "must be longer than zero".into()));
        }
        let templates: [Template<'_>; 4] = [
            ("deploy", Some(&self.deploy), &PLACEHOLDERS),
            ("rollback", self.rollback.as_ref(), &PLACEHOLDERS),
            ("current", self.current.as_ref(), &CURRENT_PLACEHOLDERS),
            ("logs", self.logs.as_ref(), &LOGS_PLACEHOLDERS),
        ];
        for (field, argv, known) in templates {
            let Some(argv) = argv else { continue };
            if argv.first().is_none_or(|program| program.trim().is_empty()) {
                out.push((field.to_string(), "empty command: give the program and its arguments as a list".into()));
            }
            out.extend(secret_references_in_argv(field, argv));
            for (i, arg) in argv.iter().enumerate() {
                for name in placeholders(arg) {
                    if !known.contains(&name.as_str()) {
                        let known = known.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ");
                        out.push((format!("{field}[{i}]"), format!("unknown placeholder {{{name}}} (known here: {known})")));
                    }
                }
            }
        }
        if self.workdir.as_deref().is_some_and(|d| d.trim().is_empty()) {
            out.push(("workdir".into(), "empty directory: leave workdir out to use the bot's own".into()));
        }
        out.extend(validate_env_table(&self.env));
        out
    }
}

/// Problems of an `env = { NAME = "${VAR}" }` table, as (`env.NAME`, message).
pub(crate) fn validate_env_table(env: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in env {
        if name.is_empty() || name.contains(['=', '\0']) {
            out.push((format!("env.{name}"), "not a valid environment variable name".into()));
        }
        for var in crate::secrets::referenced_vars(value) {
            if crate::secrets::SecretRef::parse(&format!("${{{var}}}")).is_err() {
                out.push((format!("env.{name}"), format!("\"${{{var}}}\" is not an environment variable reference (NAME in capitals)")));
            }
        }
    }
    out
}

/// A `${VAR}` in an argv would put its value where every local user reads it (`/proc/<pid>/cmdline`,
/// `ps`): secrets go through the `env` table instead. One problem per argument, as (`field[i]`, message).
pub(crate) fn secret_references_in_argv(field: &str, argv: &[String]) -> Vec<(String, String)> {
    argv.iter()
        .enumerate()
        .filter_map(|(i, arg)| {
            let var = crate::secrets::referenced_vars(arg).into_iter().next()?;
            Some((
                format!("{field}[{i}]"),
                format!(
                    "\"${{{var}}}\" in the command line would expose its value to every process on the machine: \
                     pass it in the environment instead, e.g. env = {{ {var} = \"${{{var}}}\" }}, for the command to read from its environment"
                ),
            ))
        })
        .collect()
}

/// Replaces each `{name}` placeholder of `template` by `value(name)`; `${VAR}` and unknown names stay as written.
pub(crate) fn render<'v>(template: &str, value: impl Fn(&str) -> Option<&'v str>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let escaped = open > 0 && rest.as_bytes()[open - 1] == b'$';
        let close = rest[open + 1..].find('}').map(|i| open + 1 + i);
        match close {
            Some(close) if !escaped => {
                let name = &rest[open + 1..close];
                out.push_str(&rest[..open]);
                match value(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[open..=close]),
                }
                rest = &rest[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `{name}` placeholders of a template (not `${VAR}` references).
pub(crate) fn placeholders(s: &str) -> Vec<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' && (i == 0 || bytes[i - 1] != b'$') {
            if let Some(end) = s[i + 1..].find('}') {
                out.push(s[i + 1..i + 1 + end].to_string());
                i += end + 2;
                continue;
            }
        }
        i += 1;
    }
    out
}
