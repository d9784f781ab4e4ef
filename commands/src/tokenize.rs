//! Splitting a command's text into tokens.
//!
//! Tokens are separated by whitespace. Double quotes group words into one token, with `\"` and
//! `\\` as escapes inside them. Chat clients rewrite quotes as they are typed (Slack turns
//! `"db leak"` into `“db leak”` and `'x'` into `‘x’`), so the typographic forms count as quotes
//! too; a lone `’` inside a word stays an apostrophe (`don’t`).

use std::fmt;

/// One word of a command, or one quoted string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    text: String,
    quoted: bool,
    starts_quoted: bool,
}

impl Token {
    /// The token's text with the quotes removed and escapes resolved.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether any part of the token was inside quotes.
    pub fn is_quoted(&self) -> bool {
        self.quoted
    }

    /// A flag is an unquoted token starting with `--`, or with the dash a chat client makes
    /// of `--` (`—hotfix`), or `-` and a letter (`-h`). Its name is returned with the dashes
    /// removed and any `=value` still attached.
    pub(crate) fn as_flag(&self) -> Option<&str> {
        if self.starts_quoted {
            return None;
        }
        let text = self.text.as_str();
        let rest = ["--", "—", "–"]
            .iter()
            .find_map(|dashes| text.strip_prefix(dashes))
            .or_else(|| {
                text.strip_prefix('-')
                    .filter(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic()))
            })?;
        Some(rest)
    }

    pub(crate) fn new(text: impl Into<String>, quoted: bool) -> Self {
        Token {
            text: text.into(),
            quoted,
            starts_quoted: quoted,
        }
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A quote that was opened and never closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnterminatedQuote {
    /// The opening quote character and what followed it.
    rest: String,
}

impl fmt::Display for UnterminatedQuote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = crate::text::shorten(&self.rest);
        write!(
            f,
            "unterminated quote: {shown} is missing its closing quote"
        )
    }
}

impl std::error::Error for UnterminatedQuote {}

const DOUBLE_QUOTES: [char; 4] = ['"', '“', '”', '„'];
const DOUBLE_CLOSERS: [char; 3] = ['"', '“', '”'];
const SINGLE_CLOSERS: [char; 2] = ['’', '‘'];

fn closers_for(c: char) -> Option<&'static [char]> {
    if DOUBLE_QUOTES.contains(&c) {
        Some(&DOUBLE_CLOSERS)
    } else if c == '‘' {
        Some(&SINGLE_CLOSERS)
    } else {
        None
    }
}

/// Splits `input` into tokens.
pub fn tokenize(input: &str) -> Result<Vec<Token>, UnterminatedQuote> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    let mut current: Option<Token> = None;
    while let Some((at, c)) = chars.next() {
        if c.is_whitespace() {
            tokens.extend(current.take());
            continue;
        }
        let token = current.get_or_insert_with(|| Token {
            text: String::new(),
            quoted: false,
            starts_quoted: closers_for(c).is_some(),
        });
        let Some(closers) = closers_for(c) else {
            token.text.push(c);
            continue;
        };
        token.quoted = true;
        let mut closed = false;
        while let Some((_, q)) = chars.next() {
            if closers.contains(&q) {
                closed = true;
                break;
            }
            match (q, chars.peek()) {
                ('\\', Some(&(_, next))) if next == '\\' || closers.contains(&next) => {
                    token.text.push(next);
                    chars.next();
                }
                _ => token.text.push(q),
            }
        }
        if !closed {
            return Err(UnterminatedQuote {
                rest: input[at..].to_string(),
            });
        }
    }
    tokens.extend(current);
    Ok(tokens)
}

/// Quotes `value` so that [`tokenize`] reads it back as exactly one token with the same text.
///
/// Adapters that rebuild a command line from structured options (Discord) use it for every
/// value they pass on.
pub fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if c == '\\' || DOUBLE_CLOSERS.contains(&c) {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(input: &str) -> Vec<(String, bool)> {
        match tokenize(input) {
            Ok(tokens) => tokens.into_iter().map(|t| (t.text, t.quoted)).collect(),
            Err(e) => panic!("{input:?} did not tokenize: {e}"),
        }
    }

    fn bare(s: &str) -> (String, bool) {
        (s.to_string(), false)
    }

    fn quoted(s: &str) -> (String, bool) {
        (s.to_string(), true)
    }

    #[test]
    fn whitespace_separates_tokens() {
        assert_eq!(
            texts("  v1.0.0\tprod \u{a0} --dry-run\n"),
            [bare("v1.0.0"), bare("prod"), bare("--dry-run")]
        );
        assert_eq!(texts(""), []);
        assert_eq!(texts("   "), []);
    }

    #[test]
    fn quoted_strings_are_one_token_and_remember_it() {
        assert_eq!(
            texts(r#"--hotfix "db pool leak""#),
            [bare("--hotfix"), quoted("db pool leak")]
        );
        assert_eq!(texts(r#""""#), [quoted("")]);
    }

    #[test]
    fn chat_clients_smart_quotes_are_quotes() {
        for input in [
            "“db pool leak”",
            "”db pool leak”",
            "„db pool leak“",
            "‘db pool leak’",
            "\"db pool leak”",
        ] {
            assert_eq!(texts(input), [quoted("db pool leak")], "for {input}");
        }
    }

    #[test]
    fn an_apostrophe_inside_a_word_is_not_a_quote() {
        assert_eq!(texts("don’t panic"), [bare("don’t"), bare("panic")]);
        assert_eq!(texts("don't"), [bare("don't")]);
        assert_eq!(texts("“can’t connect”"), [quoted("can’t connect")]);
    }

    #[test]
    fn backslash_escapes_quotes_and_itself_inside_quotes() {
        assert_eq!(
            texts(r#""say \"hi\" \\ now""#),
            [quoted(r#"say "hi" \ now"#)]
        );
        assert_eq!(texts(r#""C:\temp""#), [quoted(r"C:\temp")]);
        assert_eq!(texts(r"a\b"), [bare(r"a\b")]);
    }

    #[test]
    fn quotes_may_start_inside_a_token() {
        assert_eq!(texts(r#"--hotfix="db leak""#), [quoted("--hotfix=db leak")]);
        let tokens = tokenize(r#"--hotfix="db leak""#).unwrap_or_default();
        assert_eq!(tokens[0].as_flag(), Some("hotfix=db leak"));
    }

    #[test]
    fn an_unterminated_quote_is_an_error_naming_it() {
        let err = tokenize(r#"--hotfix "db pool leak"#).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some(r#"unterminated quote: "db pool leak is missing its closing quote"#)
        );
        assert!(tokenize("“db pool").is_err());
        assert!(tokenize(r#""ends with escaped quote\""#).is_err());
    }

    #[test]
    fn flags_are_unquoted_dash_words() {
        let flag = |s: &str| {
            tokenize(s)
                .ok()
                .and_then(|t| t.first().and_then(|t| t.as_flag().map(String::from)))
        };
        assert_eq!(flag("--dry-run").as_deref(), Some("dry-run"));
        assert_eq!(flag("—hotfix").as_deref(), Some("hotfix"));
        assert_eq!(flag("–to").as_deref(), Some("to"));
        assert_eq!(flag("-h").as_deref(), Some("h"));
        assert_eq!(flag("-5"), None);
        assert_eq!(flag("\"--dry-run\""), None);
        assert_eq!(flag("v1.0.0"), None);
    }

    #[test]
    fn quote_round_trips_through_tokenize() {
        for value in [
            "",
            "plain",
            "two words",
            r#"a "quoted" word"#,
            r"back\slash",
            "“smart”",
            "‘single’",
        ] {
            let tokens = texts(&quote(value));
            assert_eq!(tokens, [quoted(value)], "for {value:?}");
        }
    }
}
