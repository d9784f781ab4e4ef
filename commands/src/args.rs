//! Sorting a command's tokens into positionals and flags, driven by its [`Spec`].
//!
//! Everything that is the same for every command lives here: unknown, repeated and valueless
//! flags, `--flag=value`, extra arguments, unquoted multi-word reasons, numbers in range and
//! service lists. The command files only say what their positionals mean.

use std::collections::VecDeque;

use crate::catalog::Catalog;
use crate::newtypes::ServiceName;
use crate::spec::{Param, Shape, Spec, Value};
use crate::text::{closest, echo, shorten};
use crate::tokenize::Token;
use crate::CommandName;

/// A positional token, and whether it is an unquoted word that came right after an unquoted
/// reason (the index of that reason's flag), which means the user probably forgot the quotes.
struct Positional {
    token: Token,
    after_reason: Option<usize>,
}

pub(crate) struct Args {
    spec: &'static Spec,
    positionals: VecDeque<Token>,
    flags: Vec<(&'static Param, Option<Token>)>,
}

impl Args {
    pub fn scan(spec: &'static Spec, tokens: Vec<Token>) -> Result<Args, String> {
        let mut tokens = tokens.into_iter().peekable();
        let mut positionals: Vec<Positional> = Vec::new();
        let mut flags: Vec<(&'static Param, Option<Token>)> = Vec::new();
        let mut open_reason: Option<usize> = None;
        while let Some(token) = tokens.next() {
            let Some(flag) = token.as_flag() else {
                if token.is_quoted() {
                    open_reason = None;
                }
                positionals.push(Positional {
                    token,
                    after_reason: open_reason,
                });
                continue;
            };
            open_reason = None;
            let (typed, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (flag, None),
            };
            let shown = token.text().split('=').next().unwrap_or_default();
            let param = spec
                .flag(&typed.to_lowercase())
                .ok_or_else(|| unknown_flag(spec, shown, typed))?;
            if flags.iter().any(|(seen, _)| seen.name == param.name) {
                return Err(format!("--{} given twice", param.name));
            }
            if param.value == Value::Switch {
                if inline.is_some() {
                    return Err(format!("--{} takes no value", param.name));
                }
                flags.push((param, None));
                continue;
            }
            let value = match inline {
                Some(value) if !value.is_empty() || token.is_quoted() => {
                    Some(Token::new(value, token.is_quoted()))
                }
                Some(_) => None,
                None => tokens.next_if(|next| next.as_flag().is_none()),
            };
            let Some(mut value) = value else {
                return Err(format!(
                    "--{} needs a value: --{} {}",
                    param.name,
                    param.name,
                    param.placeholder()
                ));
            };
            if param.value == Value::Services {
                while value.text().ends_with(',') {
                    let Some(more) = tokens.next_if(|next| next.as_flag().is_none()) else {
                        break;
                    };
                    value = Token::new(
                        format!("{} {}", value.text(), more.text()),
                        value.is_quoted() || more.is_quoted(),
                    );
                }
            }
            if param.value == Value::Reason && !value.is_quoted() {
                open_reason = Some(flags.len());
            }
            flags.push((param, Some(value)));
        }
        check_extras(spec, &positionals, &flags)?;
        Ok(Args {
            spec,
            positionals: positionals.into_iter().map(|p| p.token).collect(),
            flags,
        })
    }

    pub fn next_positional(&mut self) -> Option<Token> {
        self.positionals.pop_front()
    }

    pub fn switch(&self, name: &str) -> bool {
        self.flags.iter().any(|(param, _)| param.name == name)
    }

    pub fn value(&self, name: &str) -> Option<&Token> {
        self.flags
            .iter()
            .find(|(param, _)| param.name == name)
            .and_then(|(_, value)| value.as_ref())
    }

    /// A `Value::Reason` flag: present means non-empty.
    pub fn reason(&self, name: &str) -> Result<Option<String>, String> {
        self.value(name)
            .map(|token| reason(name, token))
            .transpose()
    }

    /// A `Value::Number` flag, or `default` when it is absent.
    pub fn number(&self, name: &str, default: u32) -> Result<u32, String> {
        let (Some(param), Some(token)) = (self.spec.flag(name), self.value(name)) else {
            return Ok(default);
        };
        let Value::Number { min, max, .. } = param.value else {
            return Ok(default);
        };
        match token.text().parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "--{name} must be a number from {min} to {max}, got {}",
                echo(token.text())
            )),
        }
    }

    /// A `Value::Services` flag: known services, each once, in the order given.
    pub fn services(
        &self,
        catalog: &Catalog,
        name: &str,
    ) -> Result<Option<Vec<ServiceName>>, String> {
        let Some(token) = self.value(name) else {
            return Ok(None);
        };
        let list = token.text().trim();
        if list.is_empty() {
            return Err(format!("--{name} needs at least one service: --{name} a,b"));
        }
        let mut services: Vec<ServiceName> = Vec::new();
        for item in list.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!(
                    "--{name} has an empty entry in {} — list services as a,b",
                    echo(list)
                ));
            }
            let service = catalog.resolve_service(item)?;
            if services.contains(&service) {
                return Err(format!("{service} is listed twice in --{name}"));
            }
            services.push(service);
        }
        Ok(Some(services))
    }
}

/// A reason given as a positional argument (`/lock <env> "reason"`).
pub(crate) fn reason(what: &str, token: &Token) -> Result<String, String> {
    let text = token.text().trim();
    if text.is_empty() {
        Err(format!("the {what} reason must not be empty"))
    } else {
        Ok(text.to_string())
    }
}

fn unknown_flag(spec: &Spec, shown: &str, typed: &str) -> String {
    let shown = shorten(shown);
    let head = format!("unknown flag {shown} for /{}", spec.name);
    if let Some(near) = closest(typed, spec.flags().map(|p| p.name)) {
        return format!("{head} (did you mean --{near}?)");
    }
    let typed = typed.to_lowercase();
    let owner = CommandName::all()
        .iter()
        .find(|c| c.spec().flag(&typed).is_some());
    if let Some(owner) = owner {
        return format!("{head} (--{typed} is a flag of /{})", owner.name());
    }
    let flags: Vec<String> = spec.flags().map(|p| format!("--{}", p.name)).collect();
    if flags.is_empty() {
        format!("{head}, which takes no flags")
    } else {
        format!("{head} — its flags are {}", crate::text::join_words(&flags))
    }
}

fn check_extras(
    spec: &Spec,
    positionals: &[Positional],
    flags: &[(&Param, Option<Token>)],
) -> Result<(), String> {
    let expected: Vec<&Param> = spec.positionals().collect();
    let surplus = positionals.len().saturating_sub(expected.len());
    if surplus == 0 {
        return Ok(());
    }
    let last = expected.len().checked_sub(1);
    if let Some(last) =
        last.filter(|&i| expected[i].value == Value::Reason && expected[i].shape == Shape::Required)
    {
        let words = &positionals[last..];
        if words.iter().all(|p| !p.token.is_quoted()) {
            let reason: Vec<&str> = words.iter().map(|p| p.token.text()).collect();
            let mut example = format!("/{}", spec.name);
            for before in &positionals[..last] {
                example.push(' ');
                example.push_str(&shorten(before.token.text()));
            }
            let reason = crate::tokenize::quote(&reason.join(" "));
            let what = match expected[last].name {
                "reason" => format!("{} reason", spec.name),
                other => other.to_string(),
            };
            return Err(format!("the {what} must be quoted: {example} {reason}"));
        }
    }
    let first_tagged = positionals.iter().find_map(|p| p.after_reason);
    if let Some((param, Some(reason))) = first_tagged.and_then(|i| flags.get(i)) {
        let mut words = vec![reason.text()];
        words.extend(
            positionals
                .iter()
                .filter(|p| p.after_reason == first_tagged)
                .take(surplus)
                .map(|p| p.token.text()),
        );
        let reason = crate::tokenize::quote(&words.join(" "));
        return Err(format!(
            "the {0} reason must be quoted: --{0} {reason}",
            param.name
        ));
    }
    let extras: Vec<&str> = positionals[expected.len()..]
        .iter()
        .map(|p| p.token.text())
        .collect();
    let noun = if extras.len() == 1 {
        "argument"
    } else {
        "arguments"
    };
    Err(format!(
        "unexpected extra {noun} {}",
        echo(&extras.join(" "))
    ))
}
