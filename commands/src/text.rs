//! Small helpers for user-facing messages: echoing input back safely and "did you mean".

/// Longest piece of user input echoed back in a message, in characters.
const ECHO_LIMIT: usize = 40;

/// The user's input in double quotes, shortened and flattened to one line, for error messages.
pub(crate) fn echo(input: &str) -> String {
    format!("\"{}\"", shorten(input))
}

/// The user's input shortened and flattened to one line.
pub(crate) fn shorten(input: &str) -> String {
    let mut shown: String = input
        .chars()
        .take(ECHO_LIMIT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if input.chars().nth(ECHO_LIMIT).is_some() {
        shown.push('…');
    }
    shown
}

/// The candidate closest to `input`, if one is close enough to be a plausible typo.
///
/// Case is ignored. A candidate that starts with the input (an abbreviation such as `--dry`)
/// counts as close when it is the only such candidate.
pub(crate) fn closest<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let input = input.to_lowercase();
    if input.is_empty() {
        return None;
    }
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let allowed = match input.chars().count() {
        0..=2 => 0,
        3..=4 => 1,
        _ => 2,
    };
    let best = candidates
        .iter()
        .map(|c| (distance(&input, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    if best.is_some() {
        return best;
    }
    let mut prefixed = candidates
        .iter()
        .filter(|c| input.chars().count() >= 2 && c.to_lowercase().starts_with(&input));
    match (prefixed.next(), prefixed.next()) {
        (Some(only), None) => Some(*only),
        _ => None,
    }
}

/// Edit distance counting an adjacent transposition (`deplyo` → `deploy`) as one edit.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// `a, b and c` for a list in a sentence.
pub(crate) fn join_words(words: &[String]) -> String {
    match words {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transposition_is_one_edit() {
        assert_eq!(distance("deplyo", "deploy"), 1);
        assert_eq!(distance("hotfx", "hotfix"), 1);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn typos_suggest_the_nearest_candidate() {
        let flags = ["services", "hotfix", "dry-run", "at"];
        for (typed, expected) in [
            ("hotfx", Some("hotfix")),
            ("HOTFIX", Some("hotfix")),
            ("dryrun", Some("dry-run")),
            ("dry", Some("dry-run")),
            ("service", Some("services")),
            ("zebra", None),
            ("a", None),
            ("", None),
        ] {
            assert_eq!(closest(typed, flags), expected, "for {typed:?}");
        }
    }

    #[test]
    fn an_ambiguous_abbreviation_suggests_nothing() {
        assert_eq!(closest("st", ["status", "stats"]), None);
    }

    #[test]
    fn echoed_input_is_quoted_shortened_and_on_one_line() {
        assert_eq!(echo("1.0"), "\"1.0\"");
        assert_eq!(echo("a\nb"), "\"a b\"");
        let long = "x".repeat(100);
        assert_eq!(echo(&long), format!("\"{}…\"", "x".repeat(40)));
    }

    #[test]
    fn lists_read_as_english() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(join_words(&words(&[])), "");
        assert_eq!(join_words(&words(&["a"])), "a");
        assert_eq!(join_words(&words(&["a", "b", "c"])), "a, b and c");
    }
}
