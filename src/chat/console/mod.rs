//! The console platform: the same commands on a terminal, for the demo and for trying the bot
//! without a workspace. Messages are printed as a transcript; edits and thread replies are
//! shown as such. It also serves as the in-memory chat of the tests (see [`ConsoleChat::transcript`]).
//!
//! Input lines:
//! - `/deploy v1.0.0 staging` — a command by the current user;
//! - `@carol /window prod` — the same, as another person;
//! - `@carol :white_check_mark: #42` — react to deployment #42's approval message;
//! - `@carol :rewind: m7` — react to message `m7`; a leading `-` (`-:x: #42`) removes the reaction.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{ChatError, ChatEvent, ChatPlatform, OutMessage, ReactionTarget, UserRef};

/// One thing the console showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    Post { channel: String, id: String, text: String },
    Edit { channel: String, id: String, text: String },
    Reply { channel: String, thread: String, id: String, text: String },
    Ephemeral { channel: String, user: String, text: String },
}

impl Shown {
    pub fn text(&self) -> &str {
        match self {
            Shown::Post { text, .. } | Shown::Edit { text, .. } | Shown::Reply { text, .. } | Shown::Ephemeral { text, .. } => text,
        }
    }
}

pub struct ConsoleChat {
    out: Mutex<Option<Box<dyn Write + Send>>>,
    next_id: AtomicU64,
    groups: BTreeMap<String, Vec<String>>,
    channel_names: BTreeMap<String, String>,
    shown: Mutex<Vec<Shown>>,
    /// Messages' current text, for tests that look at the final state of an edited message.
    current: Mutex<BTreeMap<String, String>>,
}

impl ConsoleChat {
    /// `out` receives the transcript (stdout for the demo, nothing for tests).
    pub fn new(out: Option<Box<dyn Write + Send>>, groups: BTreeMap<String, Vec<String>>, channel_names: BTreeMap<String, String>) -> ConsoleChat {
        ConsoleChat {
            out: Mutex::new(out),
            next_id: AtomicU64::new(1),
            groups,
            channel_names,
            shown: Mutex::new(Vec::new()),
            current: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn transcript(&self) -> Vec<Shown> {
        self.shown.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The text a message shows now (after its edits).
    pub fn current_text(&self, id: &str) -> Option<String> {
        self.current.lock().ok().and_then(|c| c.get(id).cloned())
    }

    fn channel(&self, id: &str) -> String {
        self.channel_names.get(id).map(|n| format!("#{n}")).unwrap_or_else(|| format!("#{id}"))
    }

    fn show(&self, item: Shown) {
        let line = match &item {
            Shown::Post { channel, id, text } => format!("{} deploybot [{id}]: {}", self.channel(channel), indent(&plain(text))),
            Shown::Edit { channel, id, text } => format!("{} deploybot [{id}, edited]: {}", self.channel(channel), indent(&plain(text))),
            Shown::Reply { channel, thread, id, text } => {
                format!("{}   ↳ in thread of [{thread}] [{id}]: {}", self.channel(channel), indent(&plain(text)))
            }
            Shown::Ephemeral { channel, user, text } => format!("{} (only @{user} sees this): {}", self.channel(channel), indent(&plain(text))),
        };
        if let Ok(mut out) = self.out.lock() {
            if let Some(w) = out.as_mut() {
                let _ = writeln!(w, "{line}");
                let _ = w.flush();
            }
        }
        if let Ok(mut shown) = self.shown.lock() {
            shown.push(item);
        }
    }

    fn new_id(&self) -> String {
        format!("m{}", self.next_id.fetch_add(1, Ordering::SeqCst))
    }

    fn remember(&self, id: &str, text: &str) {
        if let Ok(mut c) = self.current.lock() {
            c.insert(id.to_string(), text.to_string());
        }
    }
}

/// `<@carol>` → `@carol`, and no Markdown asterisks on a terminal.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<@") {
        out.push_str(&rest[..start]);
        match rest[start..].find('>') {
            Some(end) => {
                out.push('@');
                out.push_str(&rest[start + 2..start + end]);
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.replace('*', "")
}

fn indent(text: &str) -> String {
    text.replace('\n', "\n    ")
}

#[async_trait]
impl ChatPlatform for ConsoleChat {
    fn name(&self) -> &'static str {
        "console"
    }

    async fn post(&self, _key: &str, channel: &str, msg: &OutMessage) -> Result<String, ChatError> {
        let id = self.new_id();
        self.remember(&id, &msg.text);
        self.show(Shown::Post { channel: channel.into(), id: id.clone(), text: msg.text.clone() });
        Ok(id)
    }

    async fn edit(&self, channel: &str, id: &str, msg: &OutMessage) -> Result<(), ChatError> {
        self.remember(id, &msg.text);
        self.show(Shown::Edit { channel: channel.into(), id: id.into(), text: msg.text.clone() });
        Ok(())
    }

    async fn reply(&self, _key: &str, channel: &str, thread: &str, msg: &OutMessage) -> Result<String, ChatError> {
        let id = self.new_id();
        self.remember(&id, &msg.text);
        self.show(Shown::Reply { channel: channel.into(), thread: thread.into(), id: id.clone(), text: msg.text.clone() });
        Ok(id)
    }

    async fn ephemeral(&self, channel: &str, user: &str, msg: &OutMessage) -> Result<(), ChatError> {
        self.show(Shown::Ephemeral { channel: channel.into(), user: user.into(), text: msg.text.clone() });
        Ok(())
    }

    async fn in_group(&self, user: &str, group: &str) -> Result<bool, ChatError> {
        Ok(self.groups.get(group).is_some_and(|members| members.iter().any(|m| m == user)))
    }
}

/// Reads one console line as an event from `default_user` (or the `@name` it starts with).
/// `Ok(None)` for an empty line; `Err` explains what the line should look like.
pub fn parse_line(line: &str, default_user: &str, channel: &str, seq: u64) -> Result<Option<ChatEvent>, String> {
    let mut rest = line.trim();
    if rest.is_empty() || rest.starts_with('#') && !rest.starts_with("#C") {
        return Ok(None);
    }
    let mut user = default_user.to_string();
    if let Some(after) = rest.strip_prefix('@') {
        let (name, tail) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
        if name.is_empty() {
            return Err("write @name before the command, e.g. @carol /status".into());
        }
        user = name.to_string();
        rest = tail.trim();
    }
    let who = UserRef { id: user.clone(), name: user };
    let event_id = Some(format!("console-{seq}"));
    if rest.starts_with('/') {
        let (command, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        return Ok(Some(ChatEvent::Command {
            event_id,
            user: who,
            channel: channel.to_string(),
            command: command.to_string(),
            text: text.trim().to_string(),
        }));
    }
    let (removed, body) = match rest.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, rest),
    };
    if let Some(after) = body.strip_prefix(':') {
        let (emoji, tail) = after.split_once(':').ok_or("an emoji is written :name:, e.g. :white_check_mark: #42")?;
        let target = tail.trim();
        let target = if let Some(n) = target.strip_prefix('#') {
            ReactionTarget::Deployment(n.parse().map_err(|_| format!("\"{target}\" is not a deployment id like #42"))?)
        } else if target.starts_with('m') && target.len() > 1 && target[1..].chars().all(|c| c.is_ascii_digit()) {
            ReactionTarget::Message { channel: String::new(), id: target.to_string() }
        } else {
            return Err(format!("react to a deployment (#42) or a message id (m7), not \"{target}\""));
        };
        let emoji = emoji.to_string();
        return Ok(Some(if removed {
            ChatEvent::ReactionRemoved { event_id, user: who, target, emoji }
        } else {
            ChatEvent::ReactionAdded { event_id, user: who, target, emoji }
        }));
    }
    Err(format!("\"{}\" is neither a /command nor a reaction like :white_check_mark: #42 (try /help)", line.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_become_commands_and_reactions() {
        let cmd = parse_line("@carol /deploy v1.0.0 prod", "alice", "console", 1).unwrap().unwrap();
        assert!(matches!(cmd, ChatEvent::Command { ref user, ref command, ref text, .. } if user.id == "carol" && command == "/deploy" && text == "v1.0.0 prod"));
        let r = parse_line(":white_check_mark: #42", "alice", "console", 2).unwrap().unwrap();
        assert!(matches!(r, ChatEvent::ReactionAdded { ref user, target: ReactionTarget::Deployment(42), ref emoji, .. } if user.id == "alice" && emoji == "white_check_mark"));
        let removed = parse_line("-:x: m7", "alice", "console", 3).unwrap().unwrap();
        assert!(matches!(removed, ChatEvent::ReactionRemoved { target: ReactionTarget::Message { ref id, .. }, .. } if id == "m7"));
        assert_eq!(parse_line("   ", "alice", "console", 4).unwrap(), None);
        assert!(parse_line("deploy please", "alice", "console", 5).unwrap_err().contains("/help"));
        assert!(parse_line(":x: #abc", "alice", "console", 6).unwrap_err().contains("deployment id"));
    }

    #[test]
    fn mentions_print_as_names() {
        assert_eq!(plain("approved by <@carol> and <@dan>, *done*"), "approved by @carol and @dan, done");
    }
}
