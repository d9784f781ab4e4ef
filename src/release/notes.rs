//! Release notes: the commits since the previous release tag, grouped by conventional-commit type
//! (`feat(api)!: …`) where the messages use it. Pure.

use super::git::Commit;

/// Conventional-commit types in the order the notes list them, with their headings.
const GROUPS: [(&str, &str); 11] = [
    ("feat", "Features"),
    ("fix", "Bug fixes"),
    ("perf", "Performance"),
    ("refactor", "Refactoring"),
    ("revert", "Reverts"),
    ("docs", "Documentation"),
    ("test", "Tests"),
    ("build", "Build"),
    ("ci", "CI"),
    ("style", "Style"),
    ("chore", "Chores"),
];

/// A commit subject split the conventional-commit way: type, scope, breaking, description.
#[derive(Debug, PartialEq, Eq)]
pub struct Conventional<'a> {
    pub kind: String,
    pub scope: Option<&'a str>,
    pub breaking: bool,
    pub description: &'a str,
}

pub fn parse_subject(subject: &str) -> Option<Conventional<'_>> {
    let (head, description) = subject.split_once(": ")?;
    let (head, breaking) = match head.strip_suffix('!') {
        Some(h) => (h, true),
        None => (head, false),
    };
    let (kind, scope) = match head.split_once('(') {
        Some((k, rest)) => (k, Some(rest.strip_suffix(')')?)),
        None => (head, None),
    };
    if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphabetic()) || scope.is_some_and(|s| s.is_empty() || s.contains([' ', '(', ')'])) {
        return None;
    }
    let description = description.trim();
    (!description.is_empty()).then(|| Conventional { kind: kind.to_ascii_lowercase(), scope, breaking, description })
}

/// The notes of `version`: a heading, then the groups (breaking changes first), each commit with
/// its short sha and author. `previous` is the previous release tag, if any.
pub fn render(version: &str, previous: Option<&str>, commits: &[Commit], truncated: bool) -> String {
    let since = match previous {
        Some(p) => format!("since {p}"),
        None => "(first release)".to_string(),
    };
    let mut out = format!("Release notes for {version} {since}: {} commit{}\n", commits.len(), if commits.len() == 1 { "" } else { "s" });
    if commits.is_empty() {
        out.push_str("No commits since the previous release.\n");
        return out;
    }
    let line = |c: &Commit, text: &str| format!("• {text} ({}, {})\n", &c.sha[..c.sha.len().min(7)], c.author);
    let parsed: Vec<(&Commit, Option<Conventional<'_>>)> = commits.iter().map(|c| (c, parse_subject(&c.subject))).collect();
    let breaking: Vec<String> = parsed
        .iter()
        .filter_map(|(c, p)| p.as_ref().filter(|p| p.breaking).map(|p| line(c, &with_scope(p))))
        .collect();
    if !breaking.is_empty() {
        out.push_str("\n⚠️ Breaking changes\n");
        out.extend(breaking);
    }
    for (kind, heading) in GROUPS {
        let items: Vec<String> = parsed.iter().filter_map(|(c, p)| p.as_ref().filter(|p| p.kind == kind).map(|p| line(c, &with_scope(p)))).collect();
        if !items.is_empty() {
            out.push_str(&format!("\n{heading}\n"));
            out.extend(items);
        }
    }
    let known = |k: &str| GROUPS.iter().any(|(g, _)| *g == k);
    let other: Vec<String> = parsed.iter().filter(|(_, p)| p.as_ref().is_none_or(|p| !known(&p.kind))).map(|(c, _)| line(c, &c.subject)).collect();
    if !other.is_empty() {
        out.push_str(if other.len() == commits.len() { "\n" } else { "\nOther changes\n" });
        out.extend(other);
    }
    if truncated {
        out.push_str("\n(only the newest commits are listed)\n");
    }
    out
}

fn with_scope(p: &Conventional<'_>) -> String {
    match p.scope {
        Some(s) => format!("{s}: {}", p.description),
        None => p.description.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(sha: &str, subject: &str) -> Commit {
        Commit { sha: format!("{sha}0000000000"), subject: subject.into(), author: "Alice".into() }
    }

    #[test]
    fn subjects_split_the_conventional_way() {
        assert_eq!(parse_subject("feat(api): add invoices"), Some(Conventional { kind: "feat".into(), scope: Some("api"), breaking: false, description: "add invoices" }));
        assert_eq!(parse_subject("fix!: drop v1 login"), Some(Conventional { kind: "fix".into(), scope: None, breaking: true, description: "drop v1 login" }));
        assert_eq!(parse_subject("Merge branch 'x'"), None);
        assert_eq!(parse_subject("Update README: typo"), None, "a space in the type is prose");
        assert_eq!(parse_subject("feat(): nothing"), None);
        assert_eq!(parse_subject("feat: "), None);
    }

    #[test]
    fn notes_group_commits_by_type_with_breaking_changes_first() {
        let commits = [
            commit("aaaaaaa", "feat(api): add invoices"),
            commit("bbbbbbb", "fix: rounding of totals"),
            commit("ccccccc", "Bump version"),
            commit("ddddddd", "feat!: new login"),
            commit("eeeeeee", "chore: tidy"),
        ];
        let notes = render("v1.1.0", Some("v1.0.0"), &commits, false);
        assert_eq!(
            notes,
            "Release notes for v1.1.0 since v1.0.0: 5 commits\n\
             \n⚠️ Breaking changes\n• new login (ddddddd, Alice)\n\
             \nFeatures\n• api: add invoices (aaaaaaa, Alice)\n• new login (ddddddd, Alice)\n\
             \nBug fixes\n• rounding of totals (bbbbbbb, Alice)\n\
             \nChores\n• tidy (eeeeeee, Alice)\n\
             \nOther changes\n• Bump version (ccccccc, Alice)\n"
        );
    }

    #[test]
    fn notes_without_conventional_messages_are_a_plain_list() {
        let notes = render("v1.0.0", None, &[commit("aaaaaaa", "Initial import"), commit("bbbbbbb", "Add backend")], true);
        assert_eq!(
            notes,
            "Release notes for v1.0.0 (first release): 2 commits\n\n• Initial import (aaaaaaa, Alice)\n• Add backend (bbbbbbb, Alice)\n\n(only the newest commits are listed)\n"
        );
        assert_eq!(render("v1.0.1", Some("v1.0.0"), &[], false), "Release notes for v1.0.1 since v1.0.0: 0 commits\nNo commits since the previous release.\n");
    }
}
