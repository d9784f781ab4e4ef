//! The declarative description of a command: its parameters, help and examples.
//!
//! Each command file holds one `Spec`; parsing, the usage line, `/help`, the Slack manifest and
//! the Discord registration are all derived from it, so they cannot drift apart.

/// One command's definition.
#[derive(Debug)]
pub(crate) struct Spec {
    pub name: &'static str,
    /// One line, no trailing period, at most 100 characters (Discord's limit).
    pub summary: &'static str,
    pub params: &'static [Param],
    /// Paragraphs shown by `/help <command>` after the usage line.
    pub details: &'static str,
    /// Complete command lines; each one is checked to parse.
    pub examples: &'static [&'static str],
}

/// One positional argument or flag.
#[derive(Debug)]
pub(crate) struct Param {
    /// The flag without its dashes, or the positional's name; also the Discord option name.
    pub name: &'static str,
    pub shape: Shape,
    pub value: Value,
    /// At most 100 characters (Discord's limit).
    pub about: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Required,
    Optional,
    Flag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value {
    /// Free text, shown in the usage line as the placeholder.
    Text(&'static str),
    /// A comma-separated list of services.
    Services,
    /// A free-form reason: one quoted string or one bare word.
    Reason,
    /// A whole number within bounds.
    Number {
        placeholder: &'static str,
        min: u32,
        max: u32,
    },
    /// A deployment id, `#42` or `42`.
    Id,
    /// A flag without a value.
    Switch,
    /// The name of a command.
    Command,
}

impl Spec {
    /// The arguments part of the usage line: `<version> <env> [--services a,b] …`.
    pub fn arguments(&self) -> String {
        self.params
            .iter()
            .map(Param::usage)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn usage(&self) -> String {
        let arguments = self.arguments();
        if arguments.is_empty() {
            format!("/{}", self.name)
        } else {
            format!("/{} {arguments}", self.name)
        }
    }

    pub fn flag(&self, name: &str) -> Option<&'static Param> {
        self.params
            .iter()
            .find(|p| p.shape == Shape::Flag && p.name == name)
    }

    pub fn flags(&self) -> impl Iterator<Item = &'static Param> {
        self.params.iter().filter(|p| p.shape == Shape::Flag)
    }

    pub fn positionals(&self) -> impl Iterator<Item = &'static Param> {
        self.params.iter().filter(|p| p.shape != Shape::Flag)
    }
}

impl Param {
    /// How the parameter reads in a usage line: `<env>`, `[env]`, `"reason"`, `[--limit N]`.
    pub fn usage(&self) -> String {
        match (self.shape, self.value) {
            (Shape::Flag, Value::Switch) => format!("[--{}]", self.name),
            (Shape::Flag, _) => format!("[--{} {}]", self.name, self.placeholder()),
            (Shape::Required, Value::Reason) => format!("\"{}\"", self.name),
            (Shape::Required, _) => format!("<{}>", self.name),
            (Shape::Optional, _) => format!("[{}]", self.name),
        }
    }

    /// What stands for the value: `a,b`, `"reason"`, `N`, `<version>`.
    pub fn placeholder(&self) -> String {
        match self.value {
            Value::Text(placeholder) | Value::Number { placeholder, .. } => placeholder.to_string(),
            Value::Reason => "\"reason\"".to_string(),
            Value::Services => "a,b".to_string(),
            Value::Id => "<deployment-id>".to_string(),
            Value::Command => "<command>".to_string(),
            Value::Switch => String::new(),
        }
    }
}
